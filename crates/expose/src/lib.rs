//! Exposition: the live board and the pipeline's health on `/metrics`, with `/healthz` and
//! `/readyz`.

mod board;
mod families;
mod health;
mod http;
pub mod text;

pub use board::{Board, Exposed};
pub use families::{family_name, health as health_names, help};
pub use health::Health;
pub use http::{render, router, AppState, Snapshot};

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;

    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use http_body_util::BodyExt;
    use rust_decimal::Decimal;
    use salespulse_aggregate::{series_key, Change, Metric, Scope, Series, Window};
    use tower::ServiceExt;

    use super::*;

    fn state(ready: bool) -> AppState {
        AppState {
            board: Arc::new(Board::default()),
            health: Health::new("test"),
            ready: Arc::new(AtomicBool::new(ready)),
            snapshot: Arc::default(),
        }
    }

    #[tokio::test]
    async fn metrics_escapes_hostile_label_values() {
        let st = state(true);
        let s = Series {
            scope: Scope::Rep,
            metric: Metric::Bookings,
            rep: Some(Arc::from("a\"b\\c\nd}")),
            team: Some(Arc::from("t")),
            region: None,
            window: Some(Window::Today),
            extra: Default::default(),
            value: Decimal::new(12345, 2),
            name: None,
        };
        st.board.apply(&[Change {
            key: series_key(&s),
            series: Some(s),
        }]);
        let res = router(st)
            .oneshot(
                Request::get("/metrics")
                    .body(Body::empty())
                    .expect("request"),
            )
            .await
            .expect("response");
        assert_eq!(res.status(), StatusCode::OK);
        let body = res.into_body().collect().await.expect("body").to_bytes();
        let text = String::from_utf8(body.to_vec()).expect("utf-8");
        assert!(
            text.contains(
                r#"sales_rep_bookings{rep="a\"b\\c\nd}",team="t",window="today"} 123.45"#
            ),
            "{text}"
        );
    }

    #[test]
    fn the_series_cap_refuses_new_series_and_counts_them() {
        let board = Board::new(Exposed {
            max_series_per_family: 2,
            ..Exposed::default()
        });
        let series = |rep: &str, v: i64| {
            let s = Series {
                scope: Scope::Rep,
                metric: Metric::Bookings,
                rep: Some(Arc::from(rep)),
                team: Some(Arc::from("t")),
                region: None,
                window: Some(Window::Today),
                extra: Default::default(),
                value: Decimal::from(v),
                name: None,
            };
            Change {
                key: series_key(&s),
                series: Some(s),
            }
        };
        board.apply(&[series("a", 1), series("b", 1), series("c", 1)]);
        assert_eq!(board.len(), 2);
        assert_eq!(board.refused(), [("sales_rep_bookings".to_owned(), 1)]);
        // Updating a held series is not refused; a removal frees a slot.
        board.apply(&[series("a", 2)]);
        assert_eq!(board.value(&series("a", 0).key), Some(2.0));
        let gone = Change {
            key: series("b", 0).key,
            series: None,
        };
        board.apply(&[gone, series("c", 1)]);
        assert_eq!(board.len(), 2);
        assert!(board.value(&series("c", 0).key).is_some());
    }

    #[tokio::test]
    async fn readyz_follows_the_flag() {
        let res = router(state(false))
            .oneshot(
                Request::get("/readyz")
                    .body(Body::empty())
                    .expect("request"),
            )
            .await
            .expect("response");
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
        let res = router(state(true))
            .oneshot(
                Request::get("/readyz")
                    .body(Body::empty())
                    .expect("request"),
            )
            .await
            .expect("response");
        assert_eq!(res.status(), StatusCode::OK);
    }

    /// The board's own text writer against the `prometheus` crate's encoder, over series of
    /// several families, values of every shape and label values that need escaping.
    #[test]
    fn the_board_writes_what_the_crate_encoder_writes() {
        use prometheus::Encoder;
        let board = Board::default();
        let mut changes = Vec::new();
        let reps = [
            "plain",
            "q\"uote",
            "back\\slash",
            "new\nline",
            "ünïcode ✓",
            "",
        ];
        let values = [
            Decimal::new(12345, 2),
            Decimal::ZERO,
            Decimal::new(-35, 1),
            Decimal::new(1, 6),
            Decimal::from(10_i64.pow(15)),
            Decimal::new(1, 28),
        ];
        for (i, rep) in reps.iter().enumerate() {
            for (metric, window) in [
                (Metric::Bookings, Some(Window::Today)),
                (Metric::DealsWon, Some(Window::Qtd)),
                (Metric::OpenPipeline, None),
            ] {
                for scope in [Scope::Rep, Scope::Team, Scope::Org] {
                    let s = Series {
                        scope,
                        metric,
                        rep: (scope == Scope::Rep).then(|| Arc::from(*rep)),
                        team: (scope != Scope::Org)
                            .then(|| Arc::from(format!("team{i}\"").as_str())),
                        region: None,
                        window,
                        extra: Default::default(),
                        value: values[i],
                        name: None,
                    };
                    changes.push(Change {
                        key: series_key(&s),
                        series: Some(s),
                    });
                }
            }
        }
        board.apply(&changes);
        assert!(board.len() > 30, "{} series", board.len());
        let texts = |board: &Board| {
            let ours = board.text().concat();
            let mut theirs = Vec::new();
            prometheus::TextEncoder::new()
                .encode(&board.gather(), &mut theirs)
                .expect("encodes");
            (
                String::from_utf8(ours).expect("utf-8"),
                String::from_utf8(theirs).expect("utf-8"),
            )
        };
        let (first, theirs) = texts(&board);
        assert_eq!(first, theirs);
        // New values of the same series: written under the labels written when they showed.
        for c in &mut changes {
            if let Some(s) = &mut c.series {
                s.value = s.value * Decimal::from(3) + Decimal::new(7, 1);
            }
        }
        board.apply(&changes);
        let (second, theirs) = texts(&board);
        assert_eq!(second, theirs);
        assert_ne!(second, first, "the values changed");
        assert_eq!(second.lines().count(), first.lines().count());
    }
}
