//! The report's charts, drawn as inline SVG with plotters.

use plotters::prelude::*;
use rust_decimal::prelude::ToPrimitive;
use rust_decimal::Decimal;

use crate::model::{Report, BUCKETS};

/// Fill of the attainment bars (also what the rendering test looks for).
pub const ATTAINMENT_COLOR: RGBColor = RGBColor(31, 119, 180);
/// Fill of the distribution bars.
pub const DISTRIBUTION_COLOR: RGBColor = RGBColor(44, 160, 44);
/// Lines of the weekly bookings, one per team in turn.
pub const TEAM_COLORS: [RGBColor; 6] = [
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(255, 127, 14),
    RGBColor(23, 190, 207),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
];
const TARGET_LINE: RGBColor = RGBColor(90, 90, 90);
const WIDTH: u32 = 900;

fn f(d: Decimal) -> f64 {
    d.to_f64().unwrap_or(0.0)
}

/// Turns a plotters failure into text: drawing into a string cannot fail for I/O reasons.
fn drawn<T, E: std::fmt::Debug>(r: Result<T, E>) -> Result<T, String> {
    r.map_err(|e| format!("{e:?}"))
}

/// Attainment of each rep with a target, best first, with the 100 % line.
pub fn attainment_by_rep(report: &Report) -> Result<String, String> {
    let mut reps: Vec<(&str, f64)> = report
        .reps
        .iter()
        .filter_map(|r| r.attainment.map(|a| (r.name.as_str(), f(a) * 100.0)))
        .collect();
    reps.sort_by(|a, b| b.1.total_cmp(&a.1));
    let n = reps.len().max(1);
    let height = (60 + 22 * n as u32).max(160);
    let max = reps.iter().map(|r| r.1).fold(125.0_f64, f64::max) * 1.05;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, height)).into_drawing_area();
        drawn(root.fill(&WHITE))?;
        let mut chart = drawn(
            ChartBuilder::on(&root)
                .margin(12)
                .x_label_area_size(28)
                .y_label_area_size(170)
                .build_cartesian_2d(0.0..max, (0..n).into_segmented()),
        )?;
        let names: Vec<&str> = reps.iter().map(|r| r.0).collect();
        drawn(
            chart
                .configure_mesh()
                .max_light_lines(1)
                .disable_y_mesh()
                .x_desc("attainment of the quarter bookings target (%)")
                .y_labels(n)
                .y_label_formatter(&|v| match v {
                    SegmentValue::CenterOf(i) => names.get(*i).copied().unwrap_or("").to_owned(),
                    _ => String::new(),
                })
                .draw(),
        )?;
        drawn(
            chart.draw_series(
                Histogram::horizontal(&chart)
                    .style(ATTAINMENT_COLOR.filled())
                    .margin(3)
                    .data(reps.iter().enumerate().map(|(i, r)| (i, r.1))),
            ),
        )?;
        drawn(chart.draw_series(std::iter::once(PathElement::new(
            vec![(100.0, SegmentValue::Exact(0)), (100.0, SegmentValue::Last)],
            TARGET_LINE.stroke_width(2),
        ))))?;
        drawn(root.present())?;
    }
    Ok(svg)
}

/// Each team's bookings per week of the quarter.
pub fn weekly_bookings(report: &Report) -> Result<String, String> {
    let weeks = report.weeks.len().max(1);
    let max = report
        .weekly
        .iter()
        .flat_map(|t| t.bookings.iter().copied().map(f))
        .fold(1.0_f64, f64::max)
        * 1.1;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, 360)).into_drawing_area();
        drawn(root.fill(&WHITE))?;
        let mut chart = drawn(
            ChartBuilder::on(&root)
                .margin(12)
                .x_label_area_size(36)
                .y_label_area_size(80)
                .build_cartesian_2d(0..weeks - 1, 0.0..max),
        )?;
        let mondays: Vec<String> = report
            .weeks
            .iter()
            .map(|w| w.format("%d %b").to_string())
            .collect();
        drawn(
            chart
                .configure_mesh()
                .max_light_lines(1)
                .x_labels(weeks)
                .x_label_formatter(&|i| mondays.get(*i).cloned().unwrap_or_default())
                .x_desc("week starting")
                .y_desc(format!("bookings ({})", report.currency))
                .draw(),
        )?;
        for (k, t) in report.weekly.iter().enumerate() {
            let color = TEAM_COLORS[k % TEAM_COLORS.len()];
            let points: Vec<(usize, f64)> = t
                .bookings
                .iter()
                .enumerate()
                .map(|(i, v)| (i, f(*v)))
                .collect();
            drawn(chart.draw_series(LineSeries::new(points.clone(), color.stroke_width(3))))?
                .label(t.team.clone())
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 5), (x + 14, y + 5)], color.filled())
                });
            drawn(
                chart.draw_series(
                    points
                        .into_iter()
                        .map(|p| Circle::new(p, 4, color.filled())),
                ),
            )?;
        }
        drawn(
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.9))
                .border_style(BLACK)
                .position(SeriesLabelPosition::UpperLeft)
                .draw(),
        )?;
        drawn(root.present())?;
    }
    Ok(svg)
}

/// How many reps reached each attainment bucket.
pub fn distribution(report: &Report) -> Result<String, String> {
    let max = report
        .distribution
        .iter()
        .copied()
        .max()
        .unwrap_or(0)
        .max(1) as u32;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, 300)).into_drawing_area();
        drawn(root.fill(&WHITE))?;
        let mut chart = drawn(
            ChartBuilder::on(&root)
                .margin(12)
                .x_label_area_size(36)
                .y_label_area_size(50)
                .build_cartesian_2d((0..BUCKETS.len() - 1).into_segmented(), 0..max + 1),
        )?;
        drawn(
            chart
                .configure_mesh()
                .max_light_lines(1)
                .disable_x_mesh()
                .x_labels(BUCKETS.len())
                .x_label_formatter(&|v| match v {
                    SegmentValue::CenterOf(i) => {
                        BUCKETS.get(*i).map(|b| b.0).unwrap_or("").to_owned()
                    }
                    _ => String::new(),
                })
                .y_desc("reps")
                .draw(),
        )?;
        drawn(
            chart.draw_series(
                Histogram::vertical(&chart)
                    .style(DISTRIBUTION_COLOR.filled())
                    .margin(12)
                    .data(
                        report
                            .distribution
                            .iter()
                            .enumerate()
                            .map(|(i, n)| (i, *n as u32)),
                    ),
            ),
        )?;
        drawn(root.present())?;
    }
    Ok(svg)
}
