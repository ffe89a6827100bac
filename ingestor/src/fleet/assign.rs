//! Who reads which channel: the leader's assignment of one platform's
//! wanted channels to the live instances, evenly by count, within each
//! instance's cap and each shared account's cap (Twitch: a logged-in
//! account joins at most 100 channels, whichever instances share it), and
//! sticky: a channel stays with its owner (or with an instance already
//! reading it) unless evenness needs it moved.

use std::collections::{BTreeMap, BTreeSet};

/// An instance as the assignment sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seat {
    /// Its name.
    pub id: String,
    /// Most channels of this platform it may read.
    pub cap: usize,
    /// The account it reads as and that account's cap, when the platform
    /// limits accounts across connections.
    pub account: Option<(String, usize)>,
}

/// Whether `seat` may take one more channel.
fn room(seat: &Seat, load: &BTreeMap<&str, usize>, account_load: &BTreeMap<String, usize>) -> bool {
    load[seat.id.as_str()] < seat.cap
        && seat
            .account
            .as_ref()
            .is_none_or(|(a, cap)| account_load.get(a).copied().unwrap_or(0) < *cap)
}

/// Counts `delta` channels more (or fewer) for `seat` and its account.
fn take(
    seat: &Seat,
    load: &mut BTreeMap<&str, usize>,
    account_load: &mut BTreeMap<String, usize>,
    delta: isize,
) {
    if let Some(l) = load.get_mut(seat.id.as_str()) {
        *l = l.saturating_add_signed(delta);
    }
    if let Some((a, _)) = &seat.account {
        let e = account_load.entry(a.clone()).or_insert(0);
        *e = e.saturating_add_signed(delta);
    }
}

/// `wanted` channels to `seats`: channel → instance. A channel no seat has
/// room for is left out (unowned). `previous`: the last assignment;
/// `readers`: who reports reading each channel now.
pub fn assign(
    seats: &[Seat],
    wanted: &BTreeSet<String>,
    previous: &BTreeMap<String, String>,
    readers: &BTreeMap<String, BTreeSet<String>>,
) -> BTreeMap<String, String> {
    let by_id: BTreeMap<&str, &Seat> = seats.iter().map(|s| (s.id.as_str(), s)).collect();
    let mut load: BTreeMap<&str, usize> = seats.iter().map(|s| (s.id.as_str(), 0)).collect();
    let mut account_load: BTreeMap<String, usize> = BTreeMap::new();
    let mut owners: BTreeMap<String, String> = BTreeMap::new();

    // Sticky: the previous owner, else someone already reading it.
    let mut unplaced = Vec::new();
    for channel in wanted {
        let keep = previous
            .get(channel)
            .and_then(|o| by_id.get(o.as_str()))
            .or_else(|| {
                readers
                    .get(channel)
                    .and_then(|r| r.iter().find_map(|id| by_id.get(id.as_str())))
            })
            .copied();
        match keep {
            Some(seat) if room(seat, &load, &account_load) => {
                take(seat, &mut load, &mut account_load, 1);
                owners.insert(channel.clone(), seat.id.clone());
            }
            _ => unplaced.push(channel),
        }
    }
    // The rest to whoever has the fewest.
    for channel in unplaced {
        let best = seats
            .iter()
            .filter(|s| room(s, &load, &account_load))
            .min_by_key(|s| (load[s.id.as_str()], s.id.as_str()));
        if let Some(seat) = best {
            take(seat, &mut load, &mut account_load, 1);
            owners.insert(channel.clone(), seat.id.clone());
        }
    }
    // Even out: move one channel from the fullest to the emptiest while
    // they differ by more than one.
    while let Some(full) = seats
        .iter()
        .max_by_key(|s| (load[s.id.as_str()], std::cmp::Reverse(s.id.as_str())))
    {
        let Some(empty) = seats
            .iter()
            .filter(|s| s.id != full.id)
            .filter(|s| {
                load[s.id.as_str()] < s.cap
                    && (s.account.as_ref().map(|a| &a.0) == full.account.as_ref().map(|a| &a.0)
                        || room(s, &load, &account_load))
            })
            .min_by_key(|s| (load[s.id.as_str()], s.id.as_str()))
        else {
            break;
        };
        if load[full.id.as_str()] <= load[empty.id.as_str()] + 1 {
            break;
        }
        let Some(channel) = owners
            .iter()
            .rev()
            .find(|(_, o)| **o == full.id)
            .map(|(c, _)| c.clone())
        else {
            break;
        };
        take(full, &mut load, &mut account_load, -1);
        take(empty, &mut load, &mut account_load, 1);
        owners.insert(channel, empty.id.clone());
    }
    owners
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seat(id: &str, cap: usize) -> Seat {
        Seat {
            id: id.into(),
            cap,
            account: None,
        }
    }

    fn channels(n: usize) -> BTreeSet<String> {
        (0..n).map(|i| format!("c{i:04}")).collect()
    }

    fn loads(owners: &BTreeMap<String, String>) -> BTreeMap<String, usize> {
        let mut l = BTreeMap::new();
        for o in owners.values() {
            *l.entry(o.clone()).or_insert(0) += 1;
        }
        l
    }

    #[test]
    fn three_instances_share_300_evenly_and_a_fourth_takes_a_quarter_moving_only_that() {
        let wanted = channels(300);
        let three = [seat("a", 1000), seat("b", 1000), seat("c", 1000)];
        let first = assign(&three, &wanted, &BTreeMap::new(), &BTreeMap::new());
        assert_eq!(first.len(), 300);
        assert!(
            loads(&first).values().all(|n| *n == 100),
            "{:?}",
            loads(&first)
        );
        let four = [
            seat("a", 1000),
            seat("b", 1000),
            seat("c", 1000),
            seat("d", 1000),
        ];
        let second = assign(&four, &wanted, &first, &BTreeMap::new());
        assert!(
            loads(&second).values().all(|n| (74..=76).contains(n)),
            "{:?}",
            loads(&second)
        );
        let moved = wanted.iter().filter(|c| first[*c] != second[*c]).count();
        assert_eq!(moved, 75, "only the new instance's share moves");
        // Stable: the same input assigns the same.
        assert_eq!(assign(&four, &wanted, &second, &BTreeMap::new()), second);
    }

    #[test]
    fn a_dead_instances_channels_go_to_the_others_evenly() {
        let wanted = channels(300);
        let three = [seat("a", 1000), seat("b", 1000), seat("c", 1000)];
        let first = assign(&three, &wanted, &BTreeMap::new(), &BTreeMap::new());
        let two = [seat("a", 1000), seat("c", 1000)];
        let second = assign(&two, &wanted, &first, &BTreeMap::new());
        assert_eq!(second.len(), 300);
        assert!(loads(&second).values().all(|n| *n == 150));
        // Nothing that a or c had moved.
        assert!(
            wanted
                .iter()
                .filter(|c| first[*c] != "b")
                .all(|c| first[c] == second[c])
        );
    }

    #[test]
    fn caps_and_shared_accounts_are_kept_and_the_rest_is_unowned() {
        let wanted = channels(250);
        let shared = |id: &str| Seat {
            id: id.into(),
            cap: 1000,
            account: Some(("bot".into(), 100)),
        };
        let seats = [shared("a"), shared("b"), seat("c", 60)];
        let owners = assign(&seats, &wanted, &BTreeMap::new(), &BTreeMap::new());
        let l = loads(&owners);
        assert_eq!(l["a"] + l["b"], 100, "one account, 100 channels: {l:?}");
        assert_eq!(l["c"], 60);
        assert_eq!(owners.len(), 160, "90 channels have no room");
        assert!(l["a"].abs_diff(l["b"]) <= 1);
    }

    #[test]
    fn a_channel_stays_with_whoever_already_reads_it() {
        let wanted = channels(2);
        let readers = BTreeMap::from([("c0000".to_string(), BTreeSet::from(["b".to_string()]))]);
        let owners = assign(
            &[seat("a", 10), seat("b", 10)],
            &wanted,
            &BTreeMap::new(),
            &readers,
        );
        assert_eq!(owners["c0000"], "b");
        assert_eq!(owners["c0001"], "a");
    }
}
