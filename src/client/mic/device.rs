//! Input devices through cpal (ALSA on Linux): listing them, picking one by
//! name or index, and choosing the capture format. Opens devices only to
//! read their formats; capturing is `capture`'s job.

use std::fmt::Write as _;

use cpal::traits::{DeviceTrait, HostTrait};
use cpal::{
    BufferSize, Device, Host, SampleFormat, SampleRate, StreamConfig, SupportedBufferSize,
    SupportedStreamConfigRange,
};

use super::MicError;
use crate::audio::TARGET_RATE;

/// One input device as the user sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceEntry {
    /// Position in the input-device list (what `--device <index>` names).
    pub index: usize,
    /// The host's id for it (ALSA: the PCM name, e.g. `default`, `hw:CARD=0,DEV=0`).
    pub id: String,
    /// Human-readable name (ALSA: the first line of the PCM's hint description).
    pub name: String,
}

impl DeviceEntry {
    /// `0: sttmic (stt test microphone)`; the name is left out when it only
    /// repeats the id.
    pub fn label(&self) -> String {
        if self.name == self.id || self.name.is_empty() {
            format!("{}: {}", self.index, self.id)
        } else {
            format!("{}: {} ({})", self.index, self.id, self.name)
        }
    }
}

/// The platform's default host (ALSA on Linux).
pub fn host() -> Host {
    cpal::default_host()
}

/// Every device that can capture, in the host's order.
pub fn input_devices(host: &Host) -> Result<Vec<(DeviceEntry, Device)>, MicError> {
    let devices = host
        .input_devices()
        .map_err(|e| MicError::Host(e.to_string()))?;
    Ok(devices
        .enumerate()
        .map(|(index, device)| (entry(index, &device), device))
        .collect())
}

fn entry(index: usize, device: &Device) -> DeviceEntry {
    let id = device
        .id()
        .map(|id| id.id().to_string())
        .unwrap_or_else(|_| format!("device {index}"));
    let name = device
        .description()
        .map(|d| d.name().to_string())
        .unwrap_or_else(|_| id.clone());
    DeviceEntry { index, id, name }
}

/// The device `wanted` names: an index from the list, an id, or a name
/// (case-insensitive). `None` is the host's default input device.
pub fn pick(host: &Host, wanted: Option<&str>) -> Result<(String, Device), MicError> {
    let devices = input_devices(host)?;
    let labels = || devices.iter().map(|(e, _)| e.label()).collect::<Vec<_>>();
    let Some(wanted) = wanted.map(str::trim) else {
        return match host.default_input_device() {
            Some(device) => Ok((entry(0, &device).id, device)),
            None => Err(MicError::NoDefaultDevice {
                available: labels(),
            }),
        };
    };
    let entries: Vec<&DeviceEntry> = devices.iter().map(|(e, _)| e).collect();
    match find(&entries, wanted) {
        Some(i) => {
            let (e, device) = &devices[i];
            Ok((e.id.clone(), device.clone()))
        }
        None => Err(MicError::NoSuchDevice {
            wanted: wanted.to_string(),
            available: labels(),
        }),
    }
}

/// Which entry `wanted` names: index, then exact id, then name ignoring case.
fn find(entries: &[&DeviceEntry], wanted: &str) -> Option<usize> {
    if let Ok(index) = wanted.parse::<usize>() {
        return entries.iter().position(|e| e.index == index);
    }
    entries.iter().position(|e| e.id == wanted).or_else(|| {
        entries
            .iter()
            .position(|e| e.name.eq_ignore_ascii_case(wanted))
    })
}

/// The `--list-devices` text: one line per input device with its default
/// capture format, or a sentence saying there are none.
pub fn list_text(host: &Host) -> Result<String, MicError> {
    let devices = input_devices(host)?;
    let default_id = host
        .default_input_device()
        .and_then(|d| d.id().ok())
        .map(|id| id.id().to_string());
    let mut out = String::new();
    if devices.is_empty() {
        out.push_str("no input devices found (no sound card, or ALSA sees none)\n");
        return Ok(out);
    }
    let _ = writeln!(out, "input devices ({}):", host.id().name());
    for (e, device) in &devices {
        let mark = if default_id.as_deref() == Some(e.id.as_str()) {
            " [default]"
        } else {
            ""
        };
        // Opening a device to read its format can fail (busy, no card
        // behind it); the listing says so instead of stopping.
        let format = match device.default_input_config() {
            Ok(c) => format!(
                "{} ch, {} Hz, {}",
                c.channels(),
                c.sample_rate(),
                c.sample_format()
            ),
            Err(err) => format!("cannot open: {err}"),
        };
        let _ = writeln!(out, "  {}{mark} — {format}", e.label());
    }
    Ok(out)
}

/// Preference among sample formats: 16-bit is what nearly every microphone
/// delivers natively (and what the wire carries), so no conversion sits in
/// front of it; floats and wider integers follow.
const FORMATS: [SampleFormat; 7] = [
    SampleFormat::I16,
    SampleFormat::F32,
    SampleFormat::I32,
    SampleFormat::F64,
    SampleFormat::U16,
    SampleFormat::I8,
    SampleFormat::U8,
];

/// How the device will be opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CaptureFormat {
    pub config: StreamConfig,
    pub sample_format: SampleFormat,
}

/// Chooses rate, channels, sample format and period for capturing.
///
/// - Rate: `want_rate` when given (an error if the device cannot), else the
///   device's default rate (its native one: we resample with a proper filter
///   rather than leave it to the driver), else 16 kHz, else the nearest rate
///   the device has.
/// - Channels: mono when offered (we average channels anyway), else the fewest.
/// - Period: one chunk (`chunk_ms`) when the device allows it, so each
///   callback carries about one chunk; otherwise the device's default.
pub fn choose(
    ranges: &[SupportedStreamConfigRange],
    default_rate: Option<SampleRate>,
    want_rate: Option<SampleRate>,
    chunk_ms: u64,
) -> Result<CaptureFormat, String> {
    let usable: Vec<&SupportedStreamConfigRange> = ranges
        .iter()
        .filter(|r| FORMATS.contains(&r.sample_format()))
        .collect();
    if usable.is_empty() {
        return Err(format!(
            "it offers no sample format this client reads ({})",
            describe(ranges)
        ));
    }
    let has = |rate: SampleRate| usable.iter().any(|r| r.contains_rate(rate));
    let rate = match want_rate {
        Some(rate) if has(rate) => rate,
        Some(rate) => {
            return Err(format!(
                "it cannot capture at {rate} Hz ({}); try another --sample-rate, or none",
                describe(ranges)
            ))
        }
        None => match default_rate {
            Some(rate) if has(rate) => rate,
            _ if has(TARGET_RATE) => TARGET_RATE,
            _ => usable
                .iter()
                // Not `clamp`: it panics when a device reports min > max.
                .map(|r| {
                    TARGET_RATE
                        .max(r.min_sample_rate())
                        .min(r.max_sample_rate())
                })
                .min_by_key(|r| r.abs_diff(TARGET_RATE))
                .unwrap_or(TARGET_RATE),
        },
    };
    let rank = |r: &SupportedStreamConfigRange| {
        let format = FORMATS
            .iter()
            .position(|f| *f == r.sample_format())
            .unwrap_or(FORMATS.len());
        (r.channels() != 1, r.channels(), format)
    };
    let best = usable
        .iter()
        .filter(|r| r.contains_rate(rate) && r.channels() > 0)
        .min_by_key(|r| rank(r))
        .ok_or_else(|| format!("it offers no usable channel layout ({})", describe(ranges)))?;
    let period = (u64::from(rate) * chunk_ms / 1000).max(1);
    let buffer_size = match best.buffer_size() {
        SupportedBufferSize::Range { min, max }
            if (u64::from(*min)..=u64::from(*max)).contains(&period) =>
        {
            BufferSize::Fixed(period as u32)
        }
        _ => BufferSize::Default,
    };
    Ok(CaptureFormat {
        config: StreamConfig {
            channels: best.channels(),
            sample_rate: rate,
            buffer_size,
        },
        sample_format: best.sample_format(),
    })
}

/// `1-2 ch, 8000-192000 Hz, i16/f32`: what a device offers, for errors.
fn describe(ranges: &[SupportedStreamConfigRange]) -> String {
    if ranges.is_empty() {
        return "it reports no formats".into();
    }
    let min_ch = ranges.iter().map(|r| r.channels()).min().unwrap_or(0);
    let max_ch = ranges.iter().map(|r| r.channels()).max().unwrap_or(0);
    let min_rate = ranges
        .iter()
        .map(|r| r.min_sample_rate())
        .min()
        .unwrap_or(0);
    let max_rate = ranges
        .iter()
        .map(|r| r.max_sample_rate())
        .max()
        .unwrap_or(0);
    let mut formats: Vec<String> = Vec::new();
    for r in ranges {
        let f = r.sample_format().to_string();
        if !formats.contains(&f) {
            formats.push(f);
        }
    }
    let span = |a: u32, b: u32| {
        if a == b {
            a.to_string()
        } else {
            format!("{a}-{b}")
        }
    };
    format!(
        "device offers {} ch, {} Hz, {}",
        span(min_ch.into(), max_ch.into()),
        span(min_rate, max_rate),
        formats.join("/")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(ch: u16, min: u32, max: u32, f: SampleFormat) -> SupportedStreamConfigRange {
        SupportedStreamConfigRange::new(
            ch,
            min,
            max,
            SupportedBufferSize::Range { min: 64, max: 8192 },
            f,
        )
    }

    #[test]
    fn prefers_mono_i16_at_the_default_rate_with_a_chunk_period() {
        let ranges = [
            range(2, 8000, 48000, SampleFormat::F32),
            range(1, 8000, 48000, SampleFormat::F32),
            range(1, 8000, 48000, SampleFormat::I16),
            range(2, 8000, 48000, SampleFormat::I16),
        ];
        let c = choose(&ranges, Some(48000), None, 100).expect("usable");
        assert_eq!(c.sample_format, SampleFormat::I16);
        assert_eq!(c.config.channels, 1);
        assert_eq!(c.config.sample_rate, 48000);
        assert_eq!(c.config.buffer_size, BufferSize::Fixed(4800));
        // A period the device cannot do falls back to its default.
        let c = choose(&ranges, Some(48000), None, 1000).expect("usable");
        assert_eq!(c.config.buffer_size, BufferSize::Default);
    }

    #[test]
    fn asked_rate_wins_or_is_a_clear_error() {
        let ranges = [range(2, 44100, 48000, SampleFormat::F32)];
        let c = choose(&ranges, Some(48000), Some(44100), 100).expect("usable");
        assert_eq!(c.config.sample_rate, 44100);
        assert_eq!(c.config.channels, 2);
        let err = choose(&ranges, Some(48000), Some(16000), 100).expect_err("unsupported");
        assert!(err.contains("16000 Hz"), "{err}");
        assert!(err.contains("44100-48000 Hz"), "{err}");
    }

    #[test]
    fn without_a_default_rate_16k_or_the_nearest() {
        let ranges = [range(1, 8000, 96000, SampleFormat::I32)];
        let c = choose(&ranges, None, None, 100).expect("usable");
        assert_eq!(c.config.sample_rate, 16000);
        let ranges = [range(1, 44100, 44100, SampleFormat::I16)];
        let c = choose(&ranges, None, None, 100).expect("usable");
        assert_eq!(c.config.sample_rate, 44100);
    }

    #[test]
    fn unreadable_formats_are_refused() {
        let ranges = [range(1, 8000, 48000, SampleFormat::U64)];
        let err = choose(&ranges, None, None, 100).expect_err("u64 only");
        assert!(err.contains("no sample format"), "{err}");
    }

    #[test]
    fn devices_are_found_by_index_id_or_name() {
        let e = |index: usize, id: &str, name: &str| DeviceEntry {
            index,
            id: id.into(),
            name: name.into(),
        };
        let list = [
            e(0, "null", "Discard all samples"),
            e(1, "sttmic", "stt test microphone"),
        ];
        let refs: Vec<&DeviceEntry> = list.iter().collect();
        assert_eq!(find(&refs, "1"), Some(1));
        assert_eq!(find(&refs, "sttmic"), Some(1));
        assert_eq!(find(&refs, "STT Test Microphone"), Some(1));
        assert_eq!(find(&refs, "7"), None);
        assert_eq!(find(&refs, "no-such-device"), None);
        assert_eq!(list[1].label(), "1: sttmic (stt test microphone)");
        assert_eq!(e(2, "x", "x").label(), "2: x");
    }
}
