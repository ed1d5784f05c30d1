//! One session's settings: the `-c` YAML and the session flags merged (flag
//! over YAML over the command's default), validated, and turned into the
//! `SessionRequest` and the per-chunk identity the wire contract needs. No
//! network here.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::cli::SessionArgs;
use crate::client::tls::ClientTls;
use crate::config::client::{ClientFile, ProfileChoice, TaskChoice, VadModeChoice};
use crate::config::ConfigError;
use crate::{pb, UsageError};

/// The server clients talk to when neither flag nor YAML names one.
pub const DEFAULT_SERVER: &str = "127.0.0.1:50051";
/// The port assumed when an address names only a host.
pub const DEFAULT_PORT: u16 = 50051;
/// gRPC metadata key the original's clients put on `StreamingRecognize`.
pub use crate::server::grpc::metadata::SESSION_ID as SESSION_ID_METADATA;
/// Session attribute that carries an API key.
pub const API_KEY_ATTRIBUTE: &str = "api_key";

/// A server address as the user wrote it and as a URI tonic can dial.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerAddr {
    /// As given (for messages).
    pub shown: String,
    /// `http://host:port`, or `https://host:port` with TLS.
    pub uri: String,
    /// How to reach it over TLS, when it speaks TLS.
    pub tls: Option<ClientTls>,
}

impl ServerAddr {
    /// Accepts `host:port`, `host`, `http://host:port`, `https://host:port`
    /// (TLS with the public roots) and IPv6 `[::1]:port`.
    pub fn parse(s: &str) -> Result<Self, UsageError> {
        let shown = s.trim().to_string();
        let bad = |why: &str| UsageError(format!("invalid server address `{shown}`: {why}"));
        let (rest, tls) = match shown.strip_prefix("https://") {
            Some(rest) => (rest, Some(ClientTls::default())),
            None => (shown.strip_prefix("http://").unwrap_or(&shown), None),
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.is_empty() || rest.contains("://") || rest.contains('/') {
            return Err(bad("expected host:port or http://host:port"));
        }
        let uri: tonic::transport::Uri = format!("http://{rest}")
            .parse()
            .map_err(|_| bad("expected host:port or http://host:port"))?;
        let authority = uri
            .authority()
            .ok_or_else(|| bad("expected host:port or http://host:port"))?;
        // The URI parser keeps `host:junk` as an authority without a port;
        // only a bare host gets the default port.
        let after_host = authority
            .as_str()
            .strip_prefix(authority.host())
            .unwrap_or("");
        let uri = match (authority.port_u16(), after_host.is_empty()) {
            (Some(_), _) => format!("http://{authority}"),
            (None, true) => format!("http://{}:{DEFAULT_PORT}", authority.host()),
            (None, false) => return Err(bad("the port must be a number from 1 to 65535")),
        };
        Ok(Self { shown, uri, tls }.with_tls(None))
    }

    /// Speaks TLS with `tls` (an `https://` address already does, with the
    /// public roots).
    pub fn with_tls(mut self, tls: Option<ClientTls>) -> Self {
        if tls.is_some() {
            self.tls = tls;
        }
        if self.tls.is_some() {
            if let Some(rest) = self.uri.strip_prefix("http://") {
                self.uri = format!("https://{rest}");
            }
        }
        self
    }
}

/// Everything a client needs to open one session.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionSettings {
    pub server: ServerAddr,
    pub session_id: String,
    pub vad_mode: VadModeChoice,
    /// `None` = server default.
    pub vad_silence: Option<f64>,
    /// `None` = server default; `Some(0.0)` travels as the override field.
    pub vad_threshold: Option<f64>,
    /// `None` = server default / auto-detect.
    pub language: Option<String>,
    pub task: Option<TaskChoice>,
    pub decode_profile: Option<ProfileChoice>,
    pub attributes: BTreeMap<String, String>,
    pub require_token: bool,
    /// Signs CreateSession (`authorization` + `x-stt-auth-ts` metadata).
    pub signed_token_secret: Option<String>,
}

impl SessionSettings {
    /// Defaults for `server` and a generated id: what a test or the bench
    /// starts from before setting fields.
    pub fn new(server: &str, id_prefix: &str) -> Result<Self, UsageError> {
        Ok(Self {
            server: ServerAddr::parse(server)?,
            session_id: generate_session_id(id_prefix),
            vad_mode: VadModeChoice::Continue,
            vad_silence: None,
            vad_threshold: None,
            language: None,
            task: None,
            decode_profile: None,
            attributes: BTreeMap::new(),
            require_token: false,
            signed_token_secret: None,
        })
    }

    /// Merges flags over the YAML over the defaults. `id_prefix` names the
    /// command in generated ids; `default_profile` is the command's own
    /// (batch asks for `accurate`).
    pub fn resolve(
        args: &SessionArgs,
        file: &ClientFile,
        id_prefix: &str,
        default_profile: Option<ProfileChoice>,
    ) -> Result<Self, UsageError> {
        let server = args
            .server
            .as_deref()
            .or(file.server.as_deref())
            .unwrap_or(DEFAULT_SERVER);
        let mut s = Self::new(server, id_prefix)?;
        s.server = s.server.with_tls(args.tls.client());
        if let Some(id) = args.session_id.as_ref().or(file.session_id.as_ref()) {
            s.session_id = id.clone();
        }
        check_session_id(&s.session_id)?;
        s.vad_mode = args.vad_mode.or(file.vad_mode).unwrap_or_default();
        s.vad_silence = finite("--vad-silence", args.vad_silence.or(file.vad_silence))?;
        s.vad_threshold = finite("--vad-threshold", args.vad_threshold.or(file.vad_threshold))?;
        s.language = args
            .language
            .as_deref()
            .or(file.language.as_deref())
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_string);
        s.task = args.task.or(file.task);
        s.decode_profile = args
            .decode_profile
            .or(file.decode_profile)
            .or(default_profile);
        s.require_token = args.require_token || file.require_token.unwrap_or(false);
        // Lowest to highest precedence: YAML attributes, YAML api_key, --attr, --api-key.
        s.attributes = file.attribute_strings();
        if let Some(key) = &file.api_key {
            s.attributes.insert(API_KEY_ATTRIBUTE.into(), key.clone());
        }
        s.attributes.extend(args.attrs.iter().cloned());
        if args.words {
            s.attributes.insert("word_timestamps".into(), "true".into());
        }
        if let Some(prompt) = &args.prompt {
            s.attributes.insert("prompt".into(), prompt.clone());
        }
        if let Some(key) = &args.api_key {
            s.attributes.insert(API_KEY_ATTRIBUTE.into(), key.clone());
        }
        s.signed_token_secret = args.signed_token_secret.clone().filter(|s| !s.is_empty());
        Ok(s)
    }

    /// The `CreateSession` request.
    pub fn request(&self) -> pb::SessionRequest {
        pb::SessionRequest {
            session_id: self.session_id.clone(),
            attributes: self.attributes.clone().into_iter().collect(),
            vad_mode: match self.vad_mode {
                VadModeChoice::Continue => pb::VadMode::VadContinue,
                VadModeChoice::Auto => pb::VadMode::VadAutoEnd,
            } as i32,
            vad_silence: self.vad_silence.unwrap_or(0.0),
            vad_threshold: self.vad_threshold.unwrap_or(0.0),
            // Field 5 cannot say "exactly 0" (0 means "server default"), so a
            // zero travels in field 10; other values stay in field 5, which
            // the original's servers read.
            vad_threshold_override: self.vad_threshold.filter(|t| *t == 0.0),
            require_token: self.require_token,
            language_code: self.language.clone().unwrap_or_default(),
            task: match self.task {
                None => pb::Task::Unspecified,
                Some(TaskChoice::Transcribe) => pb::Task::Transcribe,
                Some(TaskChoice::Translate) => pb::Task::Translate,
            } as i32,
            decode_profile: match self.decode_profile {
                None => pb::DecodeProfile::Unspecified,
                Some(ProfileChoice::Realtime) => pb::DecodeProfile::Realtime,
                Some(ProfileChoice::Accurate) => pb::DecodeProfile::Accurate,
            } as i32,
        }
    }
}

/// Reads the `-c` YAML, or all-defaults when none was given.
pub fn load_client_file(args: &SessionArgs) -> Result<ClientFile, ConfigError> {
    match &args.config {
        Some(path) => ClientFile::load(path),
        None => Ok(ClientFile::default()),
    }
}

/// A process-unique session id, `<prefix>-<pid>-<millis>` (plus `-<n>` for
/// the second and later ids of one process, which may share a millisecond).
pub fn generate_session_id(prefix: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let base = format!("{prefix}-{}-{millis}", std::process::id());
    if n == 0 {
        base
    } else {
        format!("{base}-{n}")
    }
}

/// The id travels as gRPC metadata, whose values must be visible ASCII.
fn check_session_id(id: &str) -> Result<(), UsageError> {
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(UsageError(format!(
            "invalid session id `{id}`: use visible ASCII without spaces \
             (it travels as gRPC metadata `{SESSION_ID_METADATA}`)"
        )));
    }
    Ok(())
}

fn finite(flag: &str, v: Option<f64>) -> Result<Option<f64>, UsageError> {
    match v {
        Some(x) if !x.is_finite() => Err(UsageError(format!("{flag} must be a number, got {x}"))),
        _ => Ok(v),
    }
}

/// Checks a chunk length from a flag or the YAML.
pub fn check_chunk_ms(ms: u64) -> Result<u64, UsageError> {
    use crate::config::client::MAX_CHUNK_MS;
    if (1..=MAX_CHUNK_MS).contains(&ms) {
        Ok(ms)
    } else {
        Err(UsageError(format!(
            "--chunk-ms must be between 1 and {MAX_CHUNK_MS}, got {ms}"
        )))
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn yaml(text: &str) -> ClientFile {
        ClientFile::parse(text, Path::new("c.yaml")).expect("valid yaml")
    }

    #[test]
    fn server_addresses() {
        let p = |s: &str| ServerAddr::parse(s).map(|a| a.uri);
        assert_eq!(
            p("127.0.0.1:50051").ok().as_deref(),
            Some("http://127.0.0.1:50051")
        );
        assert_eq!(
            p("http://box:9000/").ok().as_deref(),
            Some("http://box:9000")
        );
        assert_eq!(p("box").ok().as_deref(), Some("http://box:50051"));
        assert_eq!(p("[::1]:7").ok().as_deref(), Some("http://[::1]:7"));
        assert_eq!(p("https://box:1").ok().as_deref(), Some("https://box:1"));
        assert!(p("grpc://box:1").is_err());
        assert!(p("box:1/path").is_err());
        assert!(p("").is_err());
        assert!(p("box:notaport").is_err());
        assert!(p("box:70000").is_err());
    }

    #[test]
    fn defaults_without_yaml_or_flags() {
        let s = SessionSettings::resolve(
            &SessionArgs::default(),
            &ClientFile::default(),
            "file",
            None,
        )
        .expect("valid");
        assert_eq!(s.server.uri, "http://127.0.0.1:50051");
        assert!(s
            .session_id
            .starts_with(&format!("file-{}-", std::process::id())));
        assert_eq!(s.vad_mode, VadModeChoice::Continue);
        assert_eq!(s.decode_profile, None);
        let r = s.request();
        assert_eq!(r.vad_threshold, 0.0);
        assert_eq!(r.vad_threshold_override, None);
        assert_eq!(r.task, pb::Task::Unspecified as i32);
        assert_eq!(r.decode_profile, pb::DecodeProfile::Unspecified as i32);
        assert!(r.attributes.is_empty() && !r.require_token);
    }

    #[test]
    fn flags_win_over_yaml_and_yaml_over_defaults() {
        let file = yaml(
            "server: yaml:1\nvad_mode: auto\nvad_silence: 0.9\nlanguage: ja\ntask: translate\n\
             decode_profile: realtime\nattributes: {a: yaml, b: yaml}\nsession_id: from-yaml\n\
             require_token: true\napi_key: yaml-key\n",
        );
        // YAML alone.
        let s = SessionSettings::resolve(
            &SessionArgs::default(),
            &file,
            "batch",
            Some(ProfileChoice::Accurate),
        )
        .expect("valid");
        assert_eq!(s.server.uri, "http://yaml:1");
        assert_eq!(s.session_id, "from-yaml");
        assert_eq!(s.vad_mode, VadModeChoice::Auto);
        assert_eq!(s.vad_silence, Some(0.9));
        assert_eq!(
            s.decode_profile,
            Some(ProfileChoice::Realtime),
            "YAML beats the command default"
        );
        assert_eq!(s.attributes["api_key"], "yaml-key");
        assert!(s.require_token);
        // Flags on top.
        let args = SessionArgs {
            server: Some("http://cli:2".into()),
            session_id: Some("from-cli".into()),
            vad_mode: Some(VadModeChoice::Continue),
            vad_silence: Some(0.3),
            language: Some("de".into()),
            task: Some(TaskChoice::Transcribe),
            decode_profile: Some(ProfileChoice::Accurate),
            attrs: vec![("b".into(), "cli".into()), ("c".into(), "cli".into())],
            api_key: Some("cli-key".into()),
            ..SessionArgs::default()
        };
        let s = SessionSettings::resolve(&args, &file, "batch", None).expect("valid");
        assert_eq!(s.server.uri, "http://cli:2");
        assert_eq!(s.session_id, "from-cli");
        assert_eq!(s.vad_mode, VadModeChoice::Continue);
        assert_eq!(s.vad_silence, Some(0.3));
        assert_eq!(s.language.as_deref(), Some("de"));
        assert_eq!(s.task, Some(TaskChoice::Transcribe));
        assert_eq!(s.decode_profile, Some(ProfileChoice::Accurate));
        let a = &s.attributes;
        assert_eq!(
            (a["a"].as_str(), a["b"].as_str(), a["c"].as_str()),
            ("yaml", "cli", "cli")
        );
        assert_eq!(a["api_key"], "cli-key");
        // The command default applies only when neither says.
        let s = SessionSettings::resolve(
            &SessionArgs::default(),
            &ClientFile::default(),
            "batch",
            Some(ProfileChoice::Accurate),
        )
        .expect("valid");
        assert_eq!(s.decode_profile, Some(ProfileChoice::Accurate));
    }

    #[test]
    fn request_carries_every_field() {
        let args = SessionArgs {
            vad_mode: Some(VadModeChoice::Auto),
            vad_silence: Some(0.7),
            vad_threshold: Some(0.35),
            language: Some(" ja ".into()),
            task: Some(TaskChoice::Translate),
            decode_profile: Some(ProfileChoice::Accurate),
            attrs: vec![("speaker".into(), "alice".into())],
            require_token: true,
            session_id: Some("s-1".into()),
            api_key: Some("k".into()),
            ..SessionArgs::default()
        };
        let r = SessionSettings::resolve(&args, &ClientFile::default(), "file", None)
            .expect("valid")
            .request();
        assert_eq!(r.session_id, "s-1");
        assert_eq!(r.vad_mode, pb::VadMode::VadAutoEnd as i32);
        assert_eq!(r.vad_silence, 0.7);
        assert_eq!(r.vad_threshold, 0.35);
        assert_eq!(r.vad_threshold_override, None);
        assert_eq!(r.language_code, "ja");
        assert_eq!(r.task, pb::Task::Translate as i32);
        assert_eq!(r.decode_profile, pb::DecodeProfile::Accurate as i32);
        assert!(r.require_token);
        assert_eq!(
            r.attributes.get("speaker").map(String::as_str),
            Some("alice")
        );
        assert_eq!(r.attributes.get("api_key").map(String::as_str), Some("k"));
    }

    #[test]
    fn threshold_zero_travels_as_the_override() {
        let args = SessionArgs {
            vad_threshold: Some(0.0),
            ..SessionArgs::default()
        };
        let r = SessionSettings::resolve(&args, &ClientFile::default(), "file", None)
            .expect("valid")
            .request();
        assert_eq!(r.vad_threshold, 0.0);
        assert_eq!(r.vad_threshold_override, Some(0.0));
        // Also from YAML.
        let r = SessionSettings::resolve(
            &SessionArgs::default(),
            &yaml("vad_threshold: 0\n"),
            "f",
            None,
        )
        .expect("valid")
        .request();
        assert_eq!(r.vad_threshold_override, Some(0.0));
    }

    #[test]
    fn bad_values_are_usage_errors() {
        let with =
            |args: SessionArgs| SessionSettings::resolve(&args, &ClientFile::default(), "f", None);
        assert!(with(SessionArgs {
            session_id: Some("has space".into()),
            ..Default::default()
        })
        .is_err());
        assert!(with(SessionArgs {
            session_id: Some("ünï".into()),
            ..Default::default()
        })
        .is_err());
        assert!(with(SessionArgs {
            session_id: Some(String::new()),
            ..Default::default()
        })
        .is_err());
        assert!(with(SessionArgs {
            vad_threshold: Some(f64::NAN),
            ..Default::default()
        })
        .is_err());
        assert!(with(SessionArgs {
            server: Some("ftp://x:1".into()),
            ..Default::default()
        })
        .is_err());
        // https:// means TLS with the public roots; --tls-ca-file implies TLS.
        let tls = with(SessionArgs {
            server: Some("https://x:1".into()),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(tls.server.tls, Some(ClientTls::default()));
        let ca = with(SessionArgs {
            server: Some("x:1".into()),
            tls: crate::cli::TlsArgs {
                tls_ca_file: Some("ca.pem".into()),
                ..Default::default()
            },
            ..Default::default()
        })
        .unwrap();
        assert_eq!(ca.server.uri, "https://x:1");
        // Out-of-range values are the server's to judge (ERR1003), so they pass.
        assert!(with(SessionArgs {
            vad_threshold: Some(-1.0),
            ..Default::default()
        })
        .is_ok());
    }

    #[test]
    fn generated_ids_are_unique() {
        let a = generate_session_id("x");
        let b = generate_session_id("x");
        assert_ne!(a, b);
        assert!(check_session_id(&a).is_ok());
    }

    #[test]
    fn chunk_ms_bounds() {
        assert!(check_chunk_ms(0).is_err());
        assert_eq!(check_chunk_ms(100).ok(), Some(100));
        assert!(check_chunk_ms(60_001).is_err());
    }
}
