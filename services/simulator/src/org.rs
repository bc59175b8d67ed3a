//! The simulated sales org: teams, reps and the roster changes between them.

use rand::seq::IndexedRandom;
use rand::Rng;

use crate::encode::WireRoster;

const REGIONS: [&str; 16] = [
    "emea", "amer", "apac", "nordics", "dach", "benelux", "iberia", "latam", "anz", "japan",
    "india", "mea", "france", "uki", "canada", "gulf",
];

const FIRST_NAMES: [&str; 32] = [
    "Ada", "Bela", "Carmen", "Dmitri", "Elif", "Farah", "Goran", "Hana", "Ines", "Jonas", "Kenji",
    "Lena", "Mateo", "Nadia", "Oskar", "Priya", "Quentin", "Rosa", "Sven", "Tariq", "Uma",
    "Viktor", "Wen", "Ximena", "Yusuf", "Zoe", "Amara", "Bruno", "Chloe", "Diego", "Emma", "Felix",
];

const LAST_NAMES: [&str; 32] = [
    "Andersen", "Bianchi", "Costa", "Dubois", "Eriksson", "Fischer", "Garcia", "Hughes", "Ivanova",
    "Jensen", "Kowalski", "Larsen", "Moreau", "Nakamura", "Okafor", "Petrov", "Quinn", "Rossi",
    "Schmidt", "Tanaka", "Urban", "Varga", "Walsh", "Xu", "Yilmaz", "Zhang", "Almeida", "Berg",
    "Chen", "Novak", "Patel", "Silva",
];

/// A rep as the roster knows them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rep {
    pub id: String,
    pub name: String,
    pub team: usize,
    pub active: bool,
}

/// What a roster change did, for the record it produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RosterChange {
    Moved,
    Deactivated,
    Reactivated,
}

/// Teams and reps. Every collection is a `Vec` so that iteration order, and with it the whole
/// simulation, depends on nothing but the seed.
#[derive(Debug, Clone)]
pub struct Org {
    teams: Vec<String>,
    reps: Vec<Rep>,
    /// Indices of active reps, the ones that own new deals and log activities.
    active: Vec<usize>,
    /// The day the org is simulated from: hiring dates lie before it.
    today: chrono::NaiveDate,
}

/// The region a simulated team belongs to.
pub fn region_of(team: &str) -> &'static str {
    match team.strip_prefix("team-") {
        Some("amer") => "americas",
        Some("apac") => "asia-pacific",
        _ => "europe",
    }
}

/// A hiring date per rep, spread over the three years before `today`: every eleventh rep
/// (the first among them) was hired in the last quarter, so a few are always in ramp.
fn hired_at(rep: usize, today: chrono::NaiveDate) -> String {
    (today - chrono::Duration::days(1 + (rep as i64 * 97) % 1_050)).to_string()
}

/// Team ids: regions first, then numbered teams once the regions run out.
pub fn team_ids(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| match REGIONS.get(i) {
            Some(r) => format!("team-{r}"),
            None => format!("team-{:02}", i + 1),
        })
        .collect()
}

impl Org {
    /// `teams` and `reps` must be at least 1.
    pub fn new<R: Rng>(rng: &mut R, teams: usize, reps: usize, today: chrono::NaiveDate) -> Org {
        let teams = team_ids(teams.max(1));
        let reps: Vec<Rep> = (0..reps.max(1))
            .map(|i| {
                let first = FIRST_NAMES.choose(rng).copied().unwrap_or("Alex");
                let last = LAST_NAMES.choose(rng).copied().unwrap_or("Smith");
                Rep {
                    id: format!("rep-{:03}", i + 1),
                    name: format!("{first} {last}"),
                    // Round-robin keeps teams balanced; the moves later make them uneven.
                    team: i % teams.len(),
                    active: true,
                }
            })
            .collect();
        let active = (0..reps.len()).collect();
        Org {
            teams,
            reps,
            active,
            today,
        }
    }

    pub fn teams(&self) -> &[String] {
        &self.teams
    }

    pub fn reps(&self) -> &[Rep] {
        &self.reps
    }

    pub fn rep(&self, i: usize) -> &Rep {
        &self.reps[i]
    }

    pub fn team_of(&self, rep: usize) -> &str {
        &self.teams[self.reps[rep].team]
    }

    pub fn is_active(&self, rep: usize) -> bool {
        self.reps[rep].active
    }

    /// A random active rep. There always is one: deactivation keeps at least half the reps.
    pub fn random_active<R: Rng>(&self, rng: &mut R) -> usize {
        self.active.choose(rng).copied().unwrap_or(0)
    }

    /// A random active rep other than `not`, if there is one.
    pub fn other_active<R: Rng>(&self, rng: &mut R, not: usize) -> Option<usize> {
        if self.active.len() < 2 {
            return None;
        }
        loop {
            let r = self.random_active(rng);
            if r != not {
                return Some(r);
            }
        }
    }

    pub fn roster_entry(&self, rep: usize) -> WireRoster {
        let r = &self.reps[rep];
        WireRoster {
            rep_id: r.id.clone(),
            team_id: self.teams[r.team].clone(),
            name: Some(r.name.clone()),
            active: r.active,
            region: Some(region_of(&self.teams[r.team]).to_owned()),
            hired_at: Some(hired_at(rep, self.today)),
        }
    }

    /// Moves a rep to another team, or now and then lets one leave or come back. Returns the
    /// rep whose roster entry changed.
    pub fn change<R: Rng>(&mut self, rng: &mut R) -> Option<(usize, RosterChange)> {
        let inactive: Vec<usize> = (0..self.reps.len())
            .filter(|&i| !self.reps[i].active)
            .collect();
        let roll: f64 = rng.random();
        if roll < 0.1 && self.active.len() > (self.reps.len() / 2).max(1) {
            let rep = self.random_active(rng);
            self.reps[rep].active = false;
            self.active.retain(|&i| i != rep);
            return Some((rep, RosterChange::Deactivated));
        }
        if roll < 0.3 {
            if let Some(&rep) = inactive.choose(rng) {
                self.reps[rep].active = true;
                // Re-inserting in index order keeps `active` independent of history.
                let at = self.active.partition_point(|&i| i < rep);
                self.active.insert(at, rep);
                return Some((rep, RosterChange::Reactivated));
            }
        }
        if self.teams.len() < 2 {
            return None;
        }
        let rep = self.random_active(rng);
        let from = self.reps[rep].team;
        let step = rng.random_range(1..self.teams.len());
        self.reps[rep].team = (from + step) % self.teams.len();
        Some((rep, RosterChange::Moved))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn team_ids_start_with_regions_then_number() {
        let ids = team_ids(18);
        assert_eq!(
            &ids[..4],
            ["team-emea", "team-amer", "team-apac", "team-nordics"]
        );
        assert_eq!(ids[16], "team-17");
        assert_eq!(ids.len(), 18);
    }

    #[test]
    fn changes_keep_at_least_half_the_reps_active() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut org = Org::new(&mut rng, 3, 10, chrono::Utc::now().date_naive());
        let mut seen = [0u32; 3];
        for _ in 0..2000 {
            match org.change(&mut rng) {
                Some((_, RosterChange::Moved)) => seen[0] += 1,
                Some((_, RosterChange::Deactivated)) => seen[1] += 1,
                Some((_, RosterChange::Reactivated)) => seen[2] += 1,
                None => {}
            }
            let active = org.reps().iter().filter(|r| r.active).count();
            assert!(active >= 5);
            assert_eq!(active, org.active.len());
        }
        assert!(seen.iter().all(|&n| n > 0), "{seen:?}");
    }
}
