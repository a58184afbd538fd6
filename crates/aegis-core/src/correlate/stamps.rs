//! How a threshold detector's window (`WindowedBurst::recent`) is saved: each agent's
//! correlation state is saved with every SOC batch that saw the agent, and a busy agent's
//! window holds up to [`super::MAX_BURST_THRESHOLD`] stamps. Written as a list of
//! `{"at":…,"seq":…}` objects a window took about 35 bytes a stamp (a full one 35 KB a save,
//! and 100 busy agents 1.8 MB a batch); here the times and seqs are two arrays of
//! differences from the stamp before (the first from 0), which are small numbers, and the
//! containment refusals a list of positions: about 7 bytes a stamp. A window saved as a list
//! of objects, before this form, still reads.

use super::Stamp;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::VecDeque;

/// The saved form. Differences wrap (`i64::wrapping_sub`), so any stamps read back exactly.
#[derive(Serialize, Deserialize)]
struct Differences {
    at: Vec<i64>,
    seq: Vec<i64>,
    /// The positions of the containment refusals, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    contained: Vec<usize>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Saved {
    Differences(Differences),
    Listed(VecDeque<Stamp>),
}

pub(super) fn serialize<S: Serializer>(
    stamps: &VecDeque<Stamp>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    let differences = |value: fn(&Stamp) -> i64| {
        let mut last = 0_i64;
        (stamps.iter())
            .map(|stamp| {
                let difference = value(stamp).wrapping_sub(last);
                last = value(stamp);
                difference
            })
            .collect()
    };
    Differences {
        at: differences(|stamp| stamp.at),
        seq: differences(|stamp| stamp.seq),
        contained: (stamps.iter().enumerate())
            .filter_map(|(position, stamp)| stamp.contained.then_some(position))
            .collect(),
    }
    .serialize(serializer)
}

pub(super) fn deserialize<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<VecDeque<Stamp>, D::Error> {
    let saved = match Saved::deserialize(deserializer)? {
        Saved::Listed(stamps) => return Ok(stamps),
        Saved::Differences(saved) => saved,
    };
    if saved.at.len() != saved.seq.len() {
        return Err(serde::de::Error::custom(format!(
            "a window of {} times and {} seqs",
            saved.at.len(),
            saved.seq.len()
        )));
    }
    let (mut at, mut seq) = (0_i64, 0_i64);
    let mut stamps: VecDeque<Stamp> = (saved.at.iter().zip(&saved.seq))
        .map(|(at_difference, seq_difference)| {
            at = at.wrapping_add(*at_difference);
            seq = seq.wrapping_add(*seq_difference);
            Stamp {
                at,
                seq,
                contained: false,
            }
        })
        .collect();
    for position in saved.contained {
        let stamp = stamps.get_mut(position).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "containment refusal {position} of a window of {}",
                saved.at.len()
            ))
        })?;
        stamp.contained = true;
    }
    Ok(stamps)
}

#[cfg(test)]
mod tests {
    use super::super::{MAX_BURST_THRESHOLD, WindowedBurst};
    use super::*;
    use proptest::prelude::*;

    fn window(stamps: impl IntoIterator<Item = (i64, i64, bool)>) -> WindowedBurst {
        WindowedBurst {
            recent: (stamps.into_iter())
                .map(|(at, seq, contained)| Stamp { at, seq, contained })
                .collect(),
            open: Some(7),
        }
    }

    /// A busy agent's full window: a stamp every millisecond, its seqs 100 apart (other
    /// agents' events in between), every tenth a containment refusal.
    #[test]
    fn a_full_window_saves_in_under_ten_bytes_a_stamp() {
        let busy = window(
            (0..MAX_BURST_THRESHOLD as i64)
                .map(|n| (1_796_114_793_664 + n, 313_127 + 100 * n, n % 10 == 0)),
        );
        let saved = serde_json::to_string(&busy).unwrap();
        assert!(
            saved.len() < 10 * MAX_BURST_THRESHOLD,
            "{} bytes",
            saved.len()
        );
        let read: WindowedBurst = serde_json::from_str(&saved).unwrap();
        assert_eq!(read, busy);
    }

    #[test]
    fn a_window_saved_as_a_list_of_stamps_still_reads() {
        let listed = r#"{"recent":[{"at":1000,"seq":5},{"at":1000,"seq":9,"contained":true},{"at":1200,"seq":11}],"open":5}"#;
        let read: WindowedBurst = serde_json::from_str(listed).unwrap();
        assert_eq!(
            read,
            WindowedBurst {
                open: Some(5),
                ..window([(1000, 5, false), (1000, 9, true), (1200, 11, false)])
            }
        );
    }

    #[test]
    fn a_damaged_window_is_refused_with_what_is_wrong() {
        for (saved, error) in [
            (
                r#"{"recent":{"at":[1,2],"seq":[3]},"open":null}"#,
                "a window of 2 times and 1 seqs",
            ),
            (
                r#"{"recent":{"at":[1],"seq":[3],"contained":[1]},"open":null}"#,
                "containment refusal 1 of a window of 1",
            ),
        ] {
            let refused = serde_json::from_str::<WindowedBurst>(saved).unwrap_err();
            assert!(refused.to_string().contains(error), "{refused}");
        }
    }

    proptest! {
        /// Any window, whatever its times and seqs (out of order, at the ends of `i64`),
        /// reads back as it was saved.
        #[test]
        fn any_window_reads_back_as_saved(
            stamps in prop::collection::vec((any::<i64>(), any::<i64>(), any::<bool>()), 0..50),
        ) {
            let saved = window(stamps);
            let read: WindowedBurst =
                serde_json::from_str(&serde_json::to_string(&saved).unwrap()).unwrap();
            prop_assert_eq!(read, saved);
        }
    }
}
