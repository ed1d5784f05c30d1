//! The one place protobuf and domain types meet. Requests become domain
//! values with coded errors for anything out of range; domain results become
//! protobuf messages.

use crate::engine::Task;
use crate::error::{ErrorCode, SttError};
use crate::pb;
use crate::server::session::{Chunk, Profile, SessionOptions, SessionRequest, Update, VadMode};

impl TryFrom<pb::SessionRequest> for SessionRequest {
    type Error = SttError;

    fn try_from(r: pb::SessionRequest) -> Result<Self, SttError> {
        let vad_mode = match pb::VadMode::try_from(r.vad_mode) {
            Ok(pb::VadMode::VadContinue) => VadMode::Continue,
            Ok(pb::VadMode::VadAutoEnd) => VadMode::AutoEnd,
            Err(_) => return Err(invalid("vad_mode", r.vad_mode)),
        };
        let task = match pb::Task::try_from(r.task) {
            Ok(pb::Task::Unspecified) => None,
            Ok(pb::Task::Transcribe) => Some(Task::Transcribe),
            Ok(pb::Task::Translate) => Some(Task::Translate),
            Err(_) => return Err(invalid("task", r.task)),
        };
        let profile = match pb::DecodeProfile::try_from(r.decode_profile) {
            Ok(pb::DecodeProfile::Unspecified) => None,
            Ok(pb::DecodeProfile::Realtime) => Some(Profile::Realtime),
            Ok(pb::DecodeProfile::Accurate) => Some(Profile::Accurate),
            Err(_) => return Err(invalid("decode_profile", r.decode_profile)),
        };
        Ok(Self {
            session_id: r.session_id,
            attributes: r.attributes.into_iter().collect(),
            vad_mode: Some(vad_mode),
            vad_silence: r.vad_silence,
            vad_threshold: r.vad_threshold,
            vad_threshold_override: r.vad_threshold_override,
            require_token: r.require_token,
            language: r.language_code,
            task,
            profile,
            bearer: None,
            auth_ts: None,
            peer: None,
        })
    }
}

fn invalid(field: &str, value: i32) -> SttError {
    SttError::new(
        ErrorCode::Err1010,
        format!("{field} has no value {value} in this protocol"),
    )
}

/// The resolved options echoed to the client.
pub fn session_response(o: &SessionOptions, token: Option<String>) -> pb::SessionResponse {
    pb::SessionResponse {
        attributes: o
            .attributes
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        vad_mode: match o.vad_mode {
            VadMode::Continue => pb::VadMode::VadContinue,
            VadMode::AutoEnd => pb::VadMode::VadAutoEnd,
        } as i32,
        vad_silence: o.vad_silence,
        vad_threshold: o.vad_threshold,
        token_required: token.is_some(),
        token: token.unwrap_or_default(),
        language_code: o.language.clone().unwrap_or_default(),
        task: match o.task {
            Task::Transcribe => pb::Task::Transcribe,
            Task::Translate => pb::Task::Translate,
        } as i32,
        decode_profile: match o.profile {
            Profile::Realtime => pb::DecodeProfile::Realtime,
            Profile::Accurate => pb::DecodeProfile::Accurate,
        } as i32,
    }
}

impl From<pb::AudioChunk> for Chunk {
    fn from(c: pb::AudioChunk) -> Self {
        Self {
            pcm16: c.pcm16,
            sample_rate: c.sample_rate,
            is_final: c.is_final,
            session_id: c.session_id,
            session_token: c.session_token,
        }
    }
}

impl From<Update> for pb::SttResult {
    fn from(u: Update) -> Self {
        Self {
            text: u.text,
            is_final: u.is_final,
            start_sec: u.start_sec,
            end_sec: u.end_sec,
            language_code: u.language_code,
            language: u.language,
            probability: u.probability,
            committed_text: u.committed_text,
            unstable_text: u.unstable_text,
            words: u
                .words
                .unwrap_or_default()
                .into_iter()
                .map(|w| pb::Word {
                    word: w.word,
                    start_sec: w.start_sec,
                    end_sec: w.end_sec,
                    probability: f64::from(w.probability),
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_enum_values_are_err1010() {
        for r in [
            pb::SessionRequest {
                vad_mode: 7,
                ..Default::default()
            },
            pb::SessionRequest {
                task: -1,
                ..Default::default()
            },
            pb::SessionRequest {
                decode_profile: 9,
                ..Default::default()
            },
        ] {
            let e = SessionRequest::try_from(r).unwrap_err();
            assert_eq!(e.code, ErrorCode::Err1010);
        }
    }

    #[test]
    fn unspecified_means_server_default() {
        let r = SessionRequest::try_from(pb::SessionRequest::default()).unwrap();
        assert_eq!(r.task, None);
        assert_eq!(r.profile, None);
        assert_eq!(r.vad_mode, Some(VadMode::Continue));
    }
}
