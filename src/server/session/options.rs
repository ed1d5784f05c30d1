//! What a client asked for in `CreateSession`, and the validated, resolved
//! settings a session runs with. Resolution fills server defaults, checks
//! every value and picks the error code a client sees for a bad one.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::engine::{self, Task};
use crate::error::{ErrorCode, SttError};

/// VAD behaviour of a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VadMode {
    /// Many utterances, a final for each; the client ends the stream.
    Continue,
    /// The stream completes after the first utterance's final.
    AutoEnd,
}

/// Decode profile names of `model.yaml`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    Realtime,
    Accurate,
}

impl Profile {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Realtime => "realtime",
            Self::Accurate => "accurate",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "realtime" => Some(Self::Realtime),
            "accurate" => Some(Self::Accurate),
            _ => None,
        }
    }
}

/// A CreateSession request, free of protobuf types. `None` = unset.
#[derive(Debug, Clone, Default)]
pub struct SessionRequest {
    pub session_id: String,
    pub attributes: BTreeMap<String, String>,
    pub vad_mode: Option<VadMode>,
    /// Seconds; 0 = server default.
    pub vad_silence: f64,
    /// 0 = server default.
    pub vad_threshold: f64,
    /// Explicit threshold, which may be exactly 0.
    pub vad_threshold_override: Option<f64>,
    pub require_token: bool,
    pub language: String,
    pub task: Option<Task>,
    pub profile: Option<Profile>,
    /// `authorization: Bearer …` as the transport received it: an API key,
    /// or a signed token's signature.
    pub bearer: Option<String>,
    /// A signed token's `x-stt-auth-ts`.
    pub auth_ts: Option<String>,
    /// The client's address, as the transport saw it.
    pub peer: Option<std::net::IpAddr>,
}

/// Server-side defaults and facts resolution needs.
#[derive(Debug, Clone)]
pub struct Defaults {
    pub vad_silence: f64,
    pub vad_threshold: f64,
    /// Used when the client sends no language (and for every session when
    /// `language_fix` is set); `None` = detect.
    pub language: Option<String>,
    pub language_fix: bool,
    pub task: Task,
    pub profile: Profile,
    /// The server demands an API key from every session.
    pub require_api_key: bool,
    /// The session's model understands languages other than English.
    pub multilingual: bool,
    /// `model.languages`: codes detection may choose from, with weights.
    pub languages: Option<Arc<[(String, u32)]>>,
    /// The session's model, and the loaded models that are multilingual
    /// (named when a request needs one).
    pub model_id: String,
    pub multilingual_models: Vec<String>,
}

/// Settings a session runs with.
#[derive(Debug, Clone)]
pub struct SessionOptions {
    pub id: String,
    pub attributes: BTreeMap<String, String>,
    pub vad_mode: VadMode,
    pub vad_silence: f64,
    pub vad_threshold: f64,
    /// `None` = detect per utterance.
    pub language: Option<String>,
    /// When detecting: the languages to choose among (`model.languages`).
    pub candidates: Option<Arc<[(String, u32)]>>,
    pub task: Task,
    pub profile: Profile,
    pub token_required: bool,
    /// The API key the client presented, if any (for per-key metrics).
    pub api_key: Option<String>,
    /// The client's address (per-IP session cap).
    pub peer: Option<std::net::IpAddr>,
    /// `attributes["word_timestamps"]`: finals carry word timings.
    pub word_timestamps: bool,
    /// `attributes["prompt"]`: initial prompt / hotwords for every decode.
    pub prompt: Option<Arc<str>>,
    /// The API key's `audio_seconds_per_minute` (keys file), if any.
    pub audio_seconds_per_minute: Option<f64>,
}

impl SessionOptions {
    /// Whose audio-rate bucket this session draws on: its API key, else
    /// its client address, else the session itself.
    pub fn rate_key(&self) -> String {
        match (&self.api_key, self.peer) {
            (Some(key), _) => format!("api:{key}"),
            (None, Some(ip)) => format!("ip:{ip}"),
            (None, None) => format!("session:{}", self.id),
        }
    }
}

/// Attribute asking for word timings on finals.
pub const WORD_TIMESTAMPS_ATTRIBUTE: &str = "word_timestamps";
/// Attribute carrying the initial prompt.
pub const PROMPT_ATTRIBUTE: &str = "prompt";
/// Longest prompt accepted, in characters: Whisper keeps at most 223
/// tokens of it, and a token is rarely shorter than a character.
pub const MAX_PROMPT_CHARS: usize = 1000;

/// A boolean attribute: `true`/`1`/`yes` or `false`/`0`/`no`/empty.
fn flag(attributes: &BTreeMap<String, String>, key: &str) -> Result<bool, SttError> {
    match attributes.get(key).map(|v| v.trim().to_ascii_lowercase()) {
        None => Ok(false),
        Some(v) => match v.as_str() {
            "true" | "1" | "yes" => Ok(true),
            "false" | "0" | "no" | "" => Ok(false),
            _ => Err(SttError::new(
                ErrorCode::Err1010,
                format!("attribute {key} must be true or false, got {v:?}"),
            )),
        },
    }
}

/// The prompt attribute, checked: printable text of a sensible length.
fn prompt(attributes: &BTreeMap<String, String>) -> Result<Option<Arc<str>>, SttError> {
    let Some(text) = attributes.get(PROMPT_ATTRIBUTE).map(|p| p.trim()) else {
        return Ok(None);
    };
    if text.chars().count() > MAX_PROMPT_CHARS {
        return Err(SttError::new(
            ErrorCode::Err1010,
            format!("the prompt is longer than {MAX_PROMPT_CHARS} characters; Whisper keeps only its last 223 tokens"),
        ));
    }
    if text
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t')
    {
        return Err(SttError::new(
            ErrorCode::Err1010,
            "the prompt holds control characters: send plain text",
        ));
    }
    Ok((!text.is_empty()).then(|| Arc::from(text)))
}

/// Longest session id we accept; ids travel in metadata and logs.
const MAX_ID_LEN: usize = 256;

impl SessionOptions {
    /// Validates `req` and fills defaults.
    pub fn resolve(req: SessionRequest, d: &Defaults) -> Result<Self, SttError> {
        let id = req.session_id.trim().to_string();
        if id.is_empty() {
            return Err(SttError::new(
                ErrorCode::Err1001,
                "session_id is required in CreateSession",
            ));
        }
        if id.len() > MAX_ID_LEN || id.chars().any(char::is_control) {
            return Err(SttError::new(
                ErrorCode::Err1001,
                format!("session_id must be at most {MAX_ID_LEN} printable characters"),
            ));
        }

        let api_key = req
            .attributes
            .get("api_key")
            .or_else(|| req.attributes.get("api-key"))
            .filter(|k| !k.trim().is_empty())
            .cloned();
        let wants_key = req
            .attributes
            .get("api_key_required")
            .is_some_and(|v| v.eq_ignore_ascii_case("true") || v == "1");
        if (d.require_api_key || wants_key) && api_key.is_none() {
            return Err(SttError::new(
                ErrorCode::Err1009,
                "an API key is required: send it as the `api_key` session attribute",
            ));
        }

        let vad_threshold = match req.vad_threshold_override {
            Some(t) => t,
            None if req.vad_threshold == 0.0 => d.vad_threshold,
            None => req.vad_threshold,
        };
        if !vad_threshold.is_finite() || vad_threshold < 0.0 {
            return Err(SttError::new(
                ErrorCode::Err1003,
                format!("vad_threshold must be non-negative (got {vad_threshold})"),
            ));
        }
        if vad_threshold > 1.0 {
            return Err(SttError::new(
                ErrorCode::Err1003,
                format!(
                    "vad_threshold is a probability and must be at most 1 (got {vad_threshold})"
                ),
            ));
        }
        let vad_silence = if req.vad_silence == 0.0 {
            d.vad_silence
        } else {
            req.vad_silence
        };
        if !vad_silence.is_finite() || !(0.0..=60.0).contains(&vad_silence) {
            return Err(SttError::new(
                ErrorCode::Err1010,
                format!("vad_silence must be between 0 and 60 seconds (got {vad_silence})"),
            ));
        }

        let task = req.task.unwrap_or(d.task);
        let asked = req.language.trim();
        let language = if !asked.is_empty() && !asked.eq_ignore_ascii_case("auto") {
            match engine::normalize_language(asked) {
                Some(code) => Some(code.to_string()),
                None => {
                    return Err(SttError::new(
                        ErrorCode::Err1010,
                        format!("language_code {asked:?} is not a language Whisper knows"),
                    ))
                }
            }
        } else if d.language_fix {
            // model.language applies to sessions that ask for none.
            d.language.clone()
        } else {
            None
        };
        if !d.multilingual {
            let which = if d.multilingual_models.is_empty() {
                "no multilingual model is loaded (start the server with --model base, or load one with POST /admin/load_model)".to_string()
            } else {
                format!(
                    "pick a multilingual model with the model_id attribute: {}",
                    d.multilingual_models.join(", ")
                )
            };
            if let Some(lang) = language.as_deref().filter(|l| *l != "en") {
                return Err(SttError::new(
                    ErrorCode::Err1010,
                    format!(
                        "language {lang:?} needs a multilingual model; {} is English-only; {which}",
                        d.model_id
                    ),
                ));
            }
            if task == Task::Translate {
                return Err(SttError::new(
                    ErrorCode::Err1010,
                    format!(
                        "task translate needs a multilingual model; {} is English-only; {which}",
                        d.model_id
                    ),
                ));
            }
        }
        // An English-only model transcribes English; say so in the echo.
        let (language, candidates) = if d.multilingual {
            let candidates = if language.is_none() {
                d.languages.clone()
            } else {
                None
            };
            (language, candidates)
        } else {
            (Some("en".to_string()), None)
        };

        let word_timestamps = flag(&req.attributes, WORD_TIMESTAMPS_ATTRIBUTE)?;
        let prompt = prompt(&req.attributes)?;
        Ok(Self {
            id,
            word_timestamps,
            prompt,
            audio_seconds_per_minute: None,
            attributes: req.attributes,
            vad_mode: req.vad_mode.unwrap_or(VadMode::Continue),
            vad_silence,
            vad_threshold,
            language,
            candidates,
            task,
            profile: req.profile.unwrap_or(d.profile),
            token_required: req.require_token,
            api_key,
            peer: req.peer,
        })
    }
}

/// Defaults as a server on `model_id` with the shipped config would fill
/// in: the starting point of the unit tests and the fuzz targets.
#[cfg(test)]
impl Defaults {
    pub(crate) fn for_tests(model_id: &str, multilingual: bool) -> Self {
        Defaults {
            vad_silence: 0.5,
            vad_threshold: 0.5,
            language: None,
            language_fix: false,
            task: Task::Transcribe,
            profile: Profile::Realtime,
            require_api_key: false,
            multilingual,
            languages: None,
            model_id: model_id.into(),
            multilingual_models: if multilingual {
                vec![model_id.into()]
            } else {
                Vec::new()
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> Defaults {
        Defaults::for_tests("base", true)
    }

    fn req(id: &str) -> SessionRequest {
        SessionRequest {
            session_id: id.into(),
            ..Default::default()
        }
    }

    fn code(r: Result<SessionOptions, SttError>) -> ErrorCode {
        r.expect_err("should be refused").code
    }

    #[test]
    fn zeros_mean_server_defaults() {
        let o = SessionOptions::resolve(req("a"), &defaults()).unwrap();
        assert_eq!(o.vad_silence, 0.5);
        assert_eq!(o.vad_threshold, 0.5);
        assert_eq!(o.vad_mode, VadMode::Continue);
        assert_eq!(o.profile, Profile::Realtime);
        assert_eq!(o.language, None);
    }

    #[test]
    fn override_allows_exactly_zero() {
        let mut r = req("a");
        r.vad_threshold_override = Some(0.0);
        let o = SessionOptions::resolve(r, &defaults()).unwrap();
        assert_eq!(o.vad_threshold, 0.0);
    }

    #[test]
    fn bad_values_get_their_codes() {
        let d = defaults();
        assert_eq!(
            code(SessionOptions::resolve(req(" "), &d)),
            ErrorCode::Err1001
        );
        let mut r = req("a");
        r.vad_threshold = -0.1;
        assert_eq!(code(SessionOptions::resolve(r, &d)), ErrorCode::Err1003);
        let mut r = req("a");
        r.vad_threshold_override = Some(1.5);
        assert_eq!(code(SessionOptions::resolve(r, &d)), ErrorCode::Err1003);
        let mut r = req("a");
        r.language = "klingon".into();
        assert_eq!(code(SessionOptions::resolve(r, &d)), ErrorCode::Err1010);
        let mut r = req("a");
        r.language = "e\0n".into();
        assert_eq!(code(SessionOptions::resolve(r, &d)), ErrorCode::Err1010);
        let mut r = req("a");
        r.vad_silence = f64::NAN;
        assert_eq!(code(SessionOptions::resolve(r, &d)), ErrorCode::Err1010);
    }

    #[test]
    fn languages_normalise() {
        let d = defaults();
        for (asked, want) in [
            ("de", "de"),
            ("de-AT", "de"),
            ("German", "de"),
            ("EN", "en"),
        ] {
            let mut r = req("a");
            r.language = asked.into();
            let o = SessionOptions::resolve(r, &d).unwrap();
            assert_eq!(o.language.as_deref(), Some(want), "{asked}");
        }
    }

    #[test]
    fn english_only_model_refuses_other_languages_and_translation() {
        let d = Defaults {
            multilingual: false,
            ..defaults()
        };
        let mut r = req("a");
        r.language = "fr".into();
        assert_eq!(code(SessionOptions::resolve(r, &d)), ErrorCode::Err1010);
        let mut r = req("a");
        r.task = Some(Task::Translate);
        assert_eq!(code(SessionOptions::resolve(r, &d)), ErrorCode::Err1010);
        let o = SessionOptions::resolve(req("a"), &d).unwrap();
        assert_eq!(o.language.as_deref(), Some("en"));
    }

    #[test]
    fn api_key_rules() {
        let d = Defaults {
            require_api_key: true,
            ..defaults()
        };
        assert_eq!(
            code(SessionOptions::resolve(req("a"), &d)),
            ErrorCode::Err1009
        );
        let mut r = req("a");
        r.attributes.insert("api-key".into(), "k1".into());
        assert_eq!(
            SessionOptions::resolve(r, &d).unwrap().api_key.as_deref(),
            Some("k1")
        );
        // A client may demand it for itself.
        let mut r = req("a");
        r.attributes
            .insert("api_key_required".into(), "true".into());
        assert_eq!(
            code(SessionOptions::resolve(r, &defaults())),
            ErrorCode::Err1009
        );
    }
}
