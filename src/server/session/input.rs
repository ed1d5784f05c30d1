//! Checks on each inbound chunk before any of it is used: who sent it, its
//! token, and whether the audio is well-formed and within limits. Every
//! refusal is a coded error; nothing here panics on client data.

use crate::audio::{self, pcm, AudioError};
use crate::error::{ErrorCode, SttError};

use crate::server::secret::matches as token_matches;

/// One inbound chunk, free of protobuf types.
#[derive(Debug, Clone, Default)]
pub struct Chunk {
    pub pcm16: Vec<u8>,
    /// Hz; 0 = the server's `sample_rate`.
    pub sample_rate: i32,
    pub is_final: bool,
    pub session_id: String,
    pub session_token: String,
}

/// Limits a chunk is checked against.
#[derive(Debug, Clone, Copy)]
pub struct ChunkLimits {
    /// Rate assumed for `sample_rate == 0`.
    pub default_rate: u32,
    /// `server.max_chunk_ms`.
    pub max_chunk_ms: u64,
}

/// A chunk's audio as f32 at its own rate.
#[derive(Debug)]
pub struct Decoded {
    pub samples: Vec<f32>,
    pub rate: u32,
}

/// Checks identity and token, then decodes the audio.
pub fn check(
    chunk: &Chunk,
    session_id: &str,
    token: Option<&str>,
    limits: ChunkLimits,
) -> Result<Decoded, SttError> {
    if !chunk.session_id.is_empty() && chunk.session_id != session_id {
        return Err(SttError::new(
            ErrorCode::Err1004,
            format!(
                "chunk names session_id {:?} but this stream belongs to {session_id:?}",
                chunk.session_id
            ),
        ));
    }
    if let Some(expected) = token {
        if !token_matches(expected, &chunk.session_token) {
            return Err(SttError::new(
                ErrorCode::Err1005,
                if chunk.session_token.is_empty() {
                    "this session requires its session_token on every chunk"
                } else {
                    "invalid session token"
                },
            ));
        }
    }
    if chunk.pcm16.is_empty() {
        if chunk.is_final {
            return Ok(Decoded {
                samples: Vec::new(),
                rate: limits.default_rate,
            });
        }
        return Err(SttError::new(
            ErrorCode::Err1011,
            "empty audio chunk: send PCM16 samples, or is_final to end the stream",
        ));
    }
    let rate = if chunk.sample_rate == 0 {
        limits.default_rate
    } else {
        audio::check_rate(chunk.sample_rate.into()).map_err(malformed)?
    };
    // Size first, from the byte count, so an oversized chunk is refused
    // before it is decoded.
    let samples = chunk.pcm16.len() / 2;
    let ms = samples as u64 * 1000 / rate as u64;
    if ms > limits.max_chunk_ms {
        return Err(SttError::new(
            ErrorCode::Err1007,
            format!(
                "audio chunk of {ms} ms exceeds server.max_chunk_ms ({} ms); send smaller chunks",
                limits.max_chunk_ms
            ),
        ));
    }
    let samples = pcm::pcm16_to_f32(&chunk.pcm16, usize::MAX).map_err(malformed)?;
    Ok(Decoded { samples, rate })
}

/// A client's audio we cannot use: ERR1011.
pub(super) fn malformed(e: AudioError) -> SttError {
    SttError::new(ErrorCode::Err1011, format!("malformed audio: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: ChunkLimits = ChunkLimits {
        default_rate: 16_000,
        max_chunk_ms: 2_000,
    };

    fn chunk(bytes: usize, rate: i32) -> Chunk {
        Chunk {
            pcm16: vec![0; bytes],
            sample_rate: rate,
            ..Default::default()
        }
    }

    fn code(r: Result<Decoded, SttError>) -> ErrorCode {
        r.expect_err("should be refused").code
    }

    #[test]
    fn good_chunk_decodes_at_its_rate() {
        let d = check(&chunk(3200, 0), "s", None, LIMITS).unwrap();
        assert_eq!((d.samples.len(), d.rate), (1600, 16_000));
        let d = check(&chunk(960, 48_000), "s", None, LIMITS).unwrap();
        assert_eq!(d.rate, 48_000);
    }

    #[test]
    fn malformed_audio_is_err1011() {
        assert_eq!(
            code(check(&chunk(3, 0), "s", None, LIMITS)),
            ErrorCode::Err1011
        );
        assert_eq!(
            code(check(&chunk(0, 0), "s", None, LIMITS)),
            ErrorCode::Err1011
        );
        for rate in [-16_000, 1, 10_000_000] {
            assert_eq!(
                code(check(&chunk(320, rate), "s", None, LIMITS)),
                ErrorCode::Err1011
            );
        }
        // An empty chunk that ends the stream is fine.
        let mut c = chunk(0, 0);
        c.is_final = true;
        assert!(check(&c, "s", None, LIMITS).is_ok());
    }

    #[test]
    fn oversized_chunk_is_err1007() {
        // 2.5 s at 16 kHz.
        assert_eq!(
            code(check(&chunk(80_000, 16_000), "s", None, LIMITS)),
            ErrorCode::Err1007
        );
        // The same bytes at 48 kHz are 0.83 s.
        assert!(check(&chunk(80_000, 48_000), "s", None, LIMITS).is_ok());
    }

    #[test]
    fn identity_and_token() {
        let mut c = chunk(320, 0);
        c.session_id = "other".into();
        assert_eq!(code(check(&c, "s", None, LIMITS)), ErrorCode::Err1004);
        let mut c = chunk(320, 0);
        c.session_token = "wrong".into();
        assert_eq!(
            code(check(&c, "s", Some("right"), LIMITS)),
            ErrorCode::Err1005
        );
        c.session_token = "right".into();
        assert!(check(&c, "s", Some("right"), LIMITS).is_ok());
    }
}
