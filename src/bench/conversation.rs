//! Conversation audio for the capacity sweep, and how its finals are
//! matched to its utterances. A conversation is one WAV with the start and
//! end of each utterance known without any VAD: either a `NAME.json`
//! sidecar beside it (what `scripts/devset.py concat` writes), or built
//! here by joining single-utterance WAVs with pauses between them.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;

use super::plan::Clip;
use crate::audio::decode::read_audio;
use crate::audio::TARGET_RATE;
use crate::UsageError;

/// A final counts as covering an utterance only if they share this much
/// time, so a final that runs a little into the next utterance (the VAD's
/// end padding) neither claims it nor hides that it went missing.
const MIN_OVERLAP_SEC: f64 = 0.1;

/// One stream's audio and the reference timing of its utterances.
#[derive(Debug, Clone)]
pub struct Conversation {
    pub name: String,
    /// 16 kHz mono.
    pub samples: Arc<[f32]>,
    /// `(start_sec, end_sec)` of each utterance, in order.
    pub utterances: Vec<(f64, f64)>,
}

/// How to build conversations from a directory of single utterances.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Joining {
    pub utterances_per_stream: usize,
    pub gap_sec: f64,
}

/// A `devset.py concat` sidecar.
#[derive(Debug, Deserialize)]
struct Sidecar {
    audio: String,
    utterances: Vec<SidecarUtterance>,
}

#[derive(Debug, Deserialize)]
struct SidecarUtterance {
    start: f64,
    end: f64,
}

/// Reads `dir`: its `NAME.json` sidecars when it has any, else its WAVs
/// joined `joining.utterances_per_stream` at a time.
pub fn load(dir: &Path, joining: Joining) -> anyhow::Result<Vec<Conversation>> {
    if !dir.is_dir() {
        return Err(UsageError(format!(
            "--conversations {} is not a directory: give a directory of WAVs (one utterance \
             each), or of conversations with NAME.json sidecars (scripts/devset.py concat)",
            dir.display()
        ))
        .into());
    }
    let sidecars = files_with(dir, "json")?;
    if !sidecars.is_empty() {
        return sidecars.iter().map(|p| from_sidecar(dir, p)).collect();
    }
    let clips = super::plan::load_clips(dir)?;
    Ok(join(&clips, joining))
}

fn files_with(dir: &Path, ext: &str) -> anyhow::Result<Vec<PathBuf>> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", dir.display()))?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_file()
                && p.extension()
                    .and_then(|e| e.to_str())
                    .is_some_and(|e| e.eq_ignore_ascii_case(ext))
        })
        .collect();
    files.sort();
    Ok(files)
}

fn from_sidecar(dir: &Path, path: &Path) -> anyhow::Result<Conversation> {
    let bad = |why: String| {
        UsageError(format!(
            "{} is not a conversation sidecar ({why}); it needs \
             {{\"audio\": \"NAME.wav\", \"utterances\": [{{\"start\": s, \"end\": s}}, …]}}",
            path.display()
        ))
    };
    let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
    let meta: Sidecar = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
    if meta.utterances.is_empty() {
        return Err(bad("it lists no utterances".into()).into());
    }
    let utterances: Vec<(f64, f64)> = meta.utterances.iter().map(|u| (u.start, u.end)).collect();
    if utterances
        .iter()
        .any(|(s, e)| !(s.is_finite() && e.is_finite() && *s >= 0.0 && e > s))
    {
        return Err(bad("an utterance's start is not before its end".into()).into());
    }
    let wav = dir.join(&meta.audio);
    let audio = read_audio(&wav).map_err(|e| UsageError(format!("{}: {e}", path.display())))?;
    Ok(Conversation {
        name: meta.audio,
        samples: audio.samples.into(),
        utterances,
    })
}

/// Conversations of `per_stream` consecutive clips with `gap_sec` of
/// silence between them, taking the clips in turn; the last one may be
/// shorter. Silence a clip carries after its speech counts as utterance,
/// so latencies measured against these ends are lower bounds.
pub fn join(clips: &[Clip], joining: Joining) -> Vec<Conversation> {
    let per = joining.utterances_per_stream.max(1);
    let gap = (joining.gap_sec.max(0.0) * f64::from(TARGET_RATE)).round() as usize;
    let rate = f64::from(TARGET_RATE);
    clips
        .chunks(per)
        .enumerate()
        .map(|(i, group)| {
            let mut samples: Vec<f32> = Vec::new();
            let mut utterances = Vec::with_capacity(group.len());
            for (k, clip) in group.iter().enumerate() {
                if k > 0 {
                    samples.resize(samples.len() + gap, 0.0);
                }
                let start = samples.len() as f64 / rate;
                samples.extend_from_slice(&clip.samples);
                utterances.push((start, samples.len() as f64 / rate));
            }
            // A final pause, so the last utterance ends by silence as the
            // others do rather than by the stream closing.
            samples.resize(samples.len() + gap, 0.0);
            Conversation {
                name: format!("joined_{:02}", i + 1),
                samples: samples.into(),
                utterances,
            }
        })
        .collect()
}

/// A final as the client saw it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FinalSeen {
    pub start_sec: f64,
    pub end_sec: f64,
    /// Seconds from sending the chunk holding `end_sec` to receiving it.
    pub latency_sec: f64,
}

/// How one stream's utterances were answered.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Matched {
    /// End of utterance → final, one per utterance that a final closed.
    pub latencies: Vec<f64>,
    /// Utterances no final covers.
    pub missing: usize,
    /// Utterances whose closing final came before the reference end (the
    /// server heard the end early); no latency describes them.
    pub early: usize,
}

fn overlap(u: (f64, f64), f: &FinalSeen) -> f64 {
    u.1.min(f.end_sec) - u.0.max(f.start_sec)
}

fn covers(u: (f64, f64), f: &FinalSeen) -> bool {
    // Utterances shorter than twice the threshold need only half their length.
    overlap(u, f) >= MIN_OVERLAP_SEC.min((u.1 - u.0) / 2.0)
}

/// Matches finals to utterances. The final that closes an utterance is, of
/// those covering it, the one whose end is nearest the utterance's end:
/// earlier finals of an utterance the VAD split at a pause are not its end.
/// One final may close two utterances (merged across the gap); each then
/// counts how long its own end waited. The final's end is in session time,
/// sent in real time, so `latency + final end − utterance end` is how long
/// after the utterance's last sample was sent its final arrived.
pub fn match_finals(utterances: &[(f64, f64)], finals: &[FinalSeen]) -> Matched {
    let mut out = Matched::default();
    for &u in utterances {
        let closing = finals
            .iter()
            .filter(|f| covers(u, f))
            .min_by(|a, b| (a.end_sec - u.1).abs().total_cmp(&(b.end_sec - u.1).abs()));
        match closing {
            None => out.missing += 1,
            Some(f) => {
                let wait = f.latency_sec + f.end_sec - u.1;
                if wait < 0.0 {
                    out.early += 1;
                } else {
                    out.latencies.push(wait);
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fin(start_sec: f64, end_sec: f64, latency_sec: f64) -> FinalSeen {
        FinalSeen {
            start_sec,
            end_sec,
            latency_sec,
        }
    }

    #[test]
    fn each_utterance_is_closed_by_the_final_ending_nearest_it() {
        let utts = [(0.0, 4.0), (5.0, 9.0), (10.0, 11.0)];
        let finals = [
            // The VAD split the first utterance at a pause.
            fin(0.0, 2.1, 0.3),
            fin(2.5, 4.3, 0.4),
            fin(5.0, 9.2, 0.5),
        ];
        let m = match_finals(&utts, &finals);
        assert_eq!(m.missing, 1, "the third utterance got no final");
        assert_eq!(m.early, 0);
        let want = [0.4 + 4.3 - 4.0, 0.5 + 9.2 - 9.0];
        assert_eq!(m.latencies.len(), 2);
        for (got, want) in m.latencies.iter().zip(want) {
            assert!((got - want).abs() < 1e-9, "{got} vs {want}");
        }
    }

    #[test]
    fn a_final_that_only_touches_an_utterance_does_not_cover_it() {
        let utts = [(0.0, 3.0), (4.0, 7.0)];
        // Ends 0.05 s into the second utterance: padding, not a final of it.
        let m = match_finals(&utts, &[fin(0.0, 4.05, 0.2)]);
        assert_eq!(m.missing, 1);
        assert_eq!(m.latencies.len(), 1);
    }

    #[test]
    fn a_final_before_the_reference_end_counts_as_early() {
        let m = match_finals(&[(0.0, 5.0)], &[fin(0.0, 4.0, 0.3)]);
        assert_eq!((m.early, m.latencies.len(), m.missing), (1, 0, 0));
    }

    #[test]
    fn joined_clips_know_their_utterance_times() {
        let clip = |n: usize| Clip {
            name: format!("{n}.wav"),
            samples: vec![0.5; n * 16_000].into(),
        };
        let clips = [clip(1), clip(2), clip(3)];
        let convs = join(
            &clips,
            Joining {
                utterances_per_stream: 2,
                gap_sec: 1.0,
            },
        );
        assert_eq!(convs.len(), 2);
        assert_eq!(convs[0].utterances, vec![(0.0, 1.0), (2.0, 4.0)]);
        // Trailing gap after the last utterance.
        assert_eq!(convs[0].samples.len(), 5 * 16_000);
        assert_eq!(convs[1].utterances, vec![(0.0, 3.0)]);
    }
}
