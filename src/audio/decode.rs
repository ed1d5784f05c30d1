//! Audio files of any common container and codec, read into a 16 kHz mono
//! [`Clip`]: WAV through hound (as before), everything else demuxed by
//! symphonia — FLAC, MP3, Ogg Vorbis, MP4/M4A AAC, WebM/Matroska, AIFF and
//! CAF decoded by it too, Opus by libopus (symphonia has no Opus decoder). Channels are averaged and the rate converted by our resampler, so
//! every front-end sees the same samples whatever the file was.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use symphonia::core::audio::SampleBuffer;
use symphonia::core::codecs::{CodecParameters, DecoderOptions, CODEC_TYPE_NULL, CODEC_TYPE_OPUS};
use symphonia::core::errors::Error as SymphoniaError;
use symphonia::core::formats::FormatOptions;
use symphonia::core::formats::{FormatReader, Packet};
use symphonia::core::io::MediaSourceStream;
use symphonia::core::meta::MetadataOptions;
use symphonia::core::probe::Hint;

use super::resample::resample_to_16k;
use super::wav::{read_wav, Clip};
use super::AudioError;

/// What `--help` and errors name as readable.
pub const FORMATS: &str =
    "WAV, FLAC, MP3, Ogg Vorbis or Opus, M4A/MP4 AAC, WebM/Matroska (Opus, Vorbis), AIFF, CAF";

/// File name extensions of the formats above (directories of clips).
pub const EXTENSIONS: [&str; 13] = [
    "wav", "wave", "flac", "mp3", "ogg", "oga", "opus", "m4a", "mp4", "webm", "mkv", "aiff", "caf",
];

/// Whether `path` names a file in one of [`EXTENSIONS`].
pub fn has_audio_extension(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| EXTENSIONS.iter().any(|x| e.eq_ignore_ascii_case(x)))
}

/// Reads `path`, whatever its format, as 16 kHz mono f32. A file named
/// `.wav` goes to the WAV reader even when broken, so its error says what
/// is wrong with it as a WAV.
pub fn read_audio(path: &Path) -> Result<Clip, AudioError> {
    let named_wav = path
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("wav") || e.eq_ignore_ascii_case("wave"));
    if named_wav || is_riff_wave(path)? {
        return read_wav(path);
    }
    decode(path)
}

/// The RIFF/RF64 WAVE signature, which hound reads.
fn is_riff_wave(path: &Path) -> Result<bool, AudioError> {
    let io = |source| AudioError::Io {
        path: path.display().to_string(),
        source,
    };
    let mut head = [0u8; 12];
    let mut file = File::open(path).map_err(io)?;
    let mut got = 0;
    while got < head.len() {
        match file.read(&mut head[got..]).map_err(io)? {
            0 => break,
            n => got += n,
        }
    }
    Ok(got == 12 && (&head[..4] == b"RIFF" || &head[..4] == b"RF64") && &head[8..12] == b"WAVE")
}

fn decode(path: &Path) -> Result<Clip, AudioError> {
    let shown = path.display().to_string();
    let format_err = |detail: String| AudioError::Format {
        path: shown.clone(),
        detail,
    };
    let file = File::open(path).map_err(|source| AudioError::Io {
        path: shown.clone(),
        source,
    })?;
    let stream = MediaSourceStream::new(Box::new(file), Default::default());
    let mut hint = Hint::new();
    if let Some(ext) = path.extension().and_then(|e| e.to_str()) {
        hint.with_extension(ext);
    }
    let probed = symphonia::default::get_probe()
        .format(
            &hint,
            stream,
            &FormatOptions::default(),
            &MetadataOptions::default(),
        )
        .map_err(|e| {
            format_err(format!(
                "not an audio file in a format we read ({FORMATS}): {e}"
            ))
        })?;
    let mut format = probed.format;
    let track = format
        .tracks()
        .iter()
        .find(|t| t.codec_params.codec != CODEC_TYPE_NULL)
        .ok_or_else(|| format_err("the file has no audio track".into()))?;
    let track_id = track.id;
    let params = track.codec_params.clone();
    if params.codec == CODEC_TYPE_OPUS {
        return decode_opus(format, track_id, &params, &shown);
    }
    let codecs = symphonia::default::get_codecs();
    let mut decoder = codecs
        .make(&params, &DecoderOptions::default())
        .map_err(|_| {
            let name = codecs
                .get_codec(params.codec)
                .map_or_else(|| "this codec".to_string(), |d| d.short_name.to_string());
            format_err(format!(
                "{name} audio cannot be decoded here (we read {FORMATS}); convert it, e.g. \
                 `ffmpeg -i IN -ar 16000 -ac 1 OUT.wav`"
            ))
        })?;
    let mut mono: Vec<f32> = Vec::new();
    let mut rate = params.sample_rate;
    let mut buffer: Option<SampleBuffer<f32>> = None;
    while let Some(packet) = next_packet(format.as_mut(), track_id, &shown)? {
        let decoded = match decoder.decode(&packet) {
            Ok(d) => d,
            // A damaged packet is skipped, as players do.
            Err(SymphoniaError::DecodeError(_)) => continue,
            Err(e) => return Err(format_err(format!("decoding the audio: {e}"))),
        };
        let spec = *decoded.spec();
        rate = Some(spec.rate);
        let channels = spec.channels.count().max(1);
        let buf = match &mut buffer {
            Some(b) if b.capacity() >= decoded.capacity() * channels => b,
            slot => slot.insert(SampleBuffer::new(decoded.capacity() as u64, spec)),
        };
        buf.copy_interleaved_ref(decoded);
        mono.extend(
            buf.samples()
                .chunks_exact(channels)
                .map(|frame| frame.iter().sum::<f32>() / channels as f32),
        );
    }
    if mono.is_empty() {
        return Err(AudioError::Empty { path: shown });
    }
    let rate = rate.ok_or_else(|| format_err("the audio track has no sample rate".into()))?;
    let rate = super::check_rate(i64::from(rate)).map_err(|_| AudioError::Unsupported {
        path: shown.clone(),
        detail: format!("sample rate {rate} Hz"),
    })?;
    Ok(Clip {
        samples: resample_to_16k(&mono, rate)?,
        source_rate: rate,
        source_channels: params.channels.map_or(1, |c| c.count() as u16),
    })
}

/// The next packet of `track_id`; `None` at the end of the stream (which
/// symphonia reports as an unexpected EOF).
fn next_packet(
    format: &mut dyn FormatReader,
    track_id: u32,
    shown: &str,
) -> Result<Option<Packet>, AudioError> {
    loop {
        match format.next_packet() {
            Ok(p) if p.track_id() == track_id => return Ok(Some(p)),
            Ok(_) => {}
            Err(SymphoniaError::IoError(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                return Ok(None)
            }
            Err(e) => {
                return Err(AudioError::Format {
                    path: shown.to_string(),
                    detail: format!("reading the audio: {e}"),
                })
            }
        }
    }
}

/// Opus is always decoded at 48 kHz.
const OPUS_RATE: u32 = 48_000;
/// The longest Opus frame, 120 ms at 48 kHz, per channel.
const OPUS_MAX_FRAME: usize = 5_760;

/// Opus packets demuxed by symphonia, decoded by libopus.
fn decode_opus(
    mut format: Box<dyn FormatReader>,
    track_id: u32,
    params: &CodecParameters,
    shown: &str,
) -> Result<Clip, AudioError> {
    let format_err = |detail: String| AudioError::Format {
        path: shown.to_string(),
        detail,
    };
    let channels = params.channels.map_or(1, |c| c.count());
    let layout = match channels {
        1 => opus::Channels::Mono,
        2 => opus::Channels::Stereo,
        n => {
            return Err(format_err(format!(
                "Opus with {n} channels is not supported (mono and stereo are)"
            )))
        }
    };
    let mut decoder = opus::Decoder::new(OPUS_RATE, layout)
        .map_err(|e| format_err(format!("starting the Opus decoder: {e}")))?;
    let mut frame = vec![0f32; OPUS_MAX_FRAME * channels];
    let mut mono: Vec<f32> = Vec::new();
    while let Some(packet) = next_packet(format.as_mut(), track_id, shown)? {
        let n = match decoder.decode_float(&packet.data, &mut frame, false) {
            Ok(n) => n,
            // A damaged packet is skipped, as players do.
            Err(_) => continue,
        };
        mono.extend(
            frame[..n * channels]
                .chunks_exact(channels)
                .map(|f| f.iter().sum::<f32>() / channels as f32),
        );
    }
    // The encoder's look-ahead (OpusHead pre-skip) is not audio.
    let skip = (params.delay.unwrap_or(0) as usize).min(mono.len());
    mono.drain(..skip);
    if mono.is_empty() {
        return Err(AudioError::Empty {
            path: shown.to_string(),
        });
    }
    Ok(Clip {
        samples: resample_to_16k(&mono, OPUS_RATE)?,
        source_rate: OPUS_RATE,
        source_channels: channels as u16,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wav_goes_to_hound_and_other_bytes_to_symphonia() {
        let dir = tempfile::tempdir().expect("tempdir");
        let wav = dir.path().join("a.wav");
        super::super::wav::write_wav(&wav, &vec![0.25; 16_000]).expect("write");
        assert!(is_riff_wave(&wav).expect("reads"));
        assert_eq!(read_audio(&wav).expect("wav").samples.len(), 16_000);

        let text = dir.path().join("notes.mp3");
        std::fs::write(&text, "these are not audio samples at all").expect("write");
        assert!(!is_riff_wave(&text).expect("reads"));
        let err = read_audio(&text).expect_err("not audio").to_string();
        assert!(err.contains("not an audio file"), "{err}");
        assert!(err.contains("notes.mp3"), "{err}");
    }

    #[test]
    fn audio_extensions_are_recognised_case_blind() {
        assert!(has_audio_extension(Path::new("x/talk.MP3")));
        assert!(has_audio_extension(Path::new("talk.flac")));
        assert!(!has_audio_extension(Path::new("notes.txt")));
        assert!(!has_audio_extension(Path::new("noext")));
    }
}
