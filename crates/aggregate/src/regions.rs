//! Regions: an optional level above teams. A team's region is the configured one, else the
//! region most of its reps have on the roster; the region series are the sums of their teams'.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::ledger::RepInfo;
use crate::FastMap as HashMap;

/// Which region each team belongs to.
#[derive(Debug, Default, Clone)]
pub(crate) struct Regions {
    /// Team → region, from the configuration; it overrides the roster.
    configured: HashMap<Arc<str>, Arc<str>>,
    /// Team → region as last derived (configured or from the roster).
    of_team: HashMap<Arc<str>, Arc<str>>,
}

impl Regions {
    pub fn configure(&mut self, teams: impl IntoIterator<Item = (Arc<str>, Arc<str>)>) {
        self.configured = teams.into_iter().collect();
    }

    /// Whether there are regions at all: configured, or named on the roster.
    pub fn enabled(&self) -> bool {
        !self.configured.is_empty() || !self.of_team.is_empty()
    }

    /// The region of `team` (`unassigned` for a team of none), when regions are enabled.
    pub fn region_of(&self, team: &Arc<str>, unassigned: &Arc<str>) -> Option<Arc<str>> {
        if !self.enabled() {
            return None;
        }
        Some(self.of_team.get(team).unwrap_or(unassigned).clone())
    }

    /// Derives every team's region again from the configuration and the roster (team of
    /// each rep, and its info); returns the regions that gained or lost a team.
    pub fn derive(
        &mut self,
        roster: &HashMap<Arc<str>, Arc<str>>,
        info: &HashMap<Arc<str>, RepInfo>,
        unassigned: &Arc<str>,
    ) -> Vec<Arc<str>> {
        // Votes per team, regions in name order so that a tie goes to the first by name.
        let mut votes: HashMap<Arc<str>, BTreeMap<Arc<str>, usize>> = HashMap::default();
        for (rep, team) in roster {
            if let Some(region) = info.get(rep).and_then(|i| i.region.as_ref()) {
                *votes
                    .entry(team.clone())
                    .or_default()
                    .entry(region.clone())
                    .or_default() += 1;
            }
        }
        let mut next: HashMap<Arc<str>, Arc<str>> = votes
            .into_iter()
            .filter_map(|(team, regions)| {
                let most = regions.values().copied().max()?;
                let region = regions.into_iter().find(|(_, n)| *n == most)?.0;
                Some((team, region))
            })
            .collect();
        next.extend(self.configured.iter().map(|(t, r)| (t.clone(), r.clone())));
        let was_enabled = self.enabled();
        let mut changed = Vec::new();
        let teams: Vec<&Arc<str>> = self.of_team.keys().chain(next.keys()).collect();
        for team in teams {
            let before = self.of_team.get(team).or(was_enabled.then_some(unassigned));
            let after = next.get(team).or((!next.is_empty()).then_some(unassigned));
            if before != after {
                changed.extend(before.cloned());
                changed.extend(after.cloned());
            }
        }
        self.of_team = next;
        changed.sort();
        changed.dedup();
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> Arc<str> {
        Arc::from(s)
    }

    fn info(region: &str) -> RepInfo {
        RepInfo {
            region: Some(a(region)),
            ..RepInfo::default()
        }
    }

    #[test]
    fn a_team_takes_the_region_most_of_its_reps_have_unless_configured() {
        let un = a("unassigned");
        let mut r = Regions::default();
        assert!(r.region_of(&a("x"), &un).is_none(), "no regions: none");
        let roster: HashMap<Arc<str>, Arc<str>> = [
            (a("r1"), a("x")),
            (a("r2"), a("x")),
            (a("r3"), a("x")),
            (a("r4"), a("y")),
        ]
        .into_iter()
        .collect();
        let mut infos: HashMap<Arc<str>, RepInfo> = [
            (a("r1"), info("emea")),
            (a("r2"), info("emea")),
            (a("r3"), info("amer")),
            (a("r4"), info("amer")),
        ]
        .into_iter()
        .collect();
        let changed = r.derive(&roster, &infos, &un);
        assert_eq!(changed, vec![a("amer"), a("emea")]);
        assert_eq!(r.region_of(&a("x"), &un), Some(a("emea")));
        assert_eq!(r.region_of(&a("y"), &un), Some(a("amer")));
        assert_eq!(r.region_of(&a("z"), &un), Some(un.clone()));
        // One rep changes region: the majority moves the team.
        infos.insert(a("r2"), info("amer"));
        assert_eq!(r.derive(&roster, &infos, &un), vec![a("amer"), a("emea")]);
        assert_eq!(r.region_of(&a("x"), &un), Some(a("amer")));
        // The configuration overrides the roster.
        r.configure([(a("x"), a("nordics"))]);
        assert_eq!(
            r.derive(&roster, &infos, &un),
            vec![a("amer"), a("nordics")]
        );
        assert_eq!(r.region_of(&a("x"), &un), Some(a("nordics")));
    }
}
