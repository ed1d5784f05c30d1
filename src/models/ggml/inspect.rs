//! [`inspect`]: reads a ggml Whisper file's header and walks its tensor
//! headers without loading any weights, so a file can be checked before
//! whisper.cpp is handed it.

use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use super::{Hparams, TensorType, MAGIC};

/// Ways a ggml file can fail to read.
#[derive(Debug, thiserror::Error)]
pub enum GgmlError {
    /// Opening or reading the file failed.
    #[error("cannot read {path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The file does not start with the ggml magic.
    #[error("{path} is not a ggml Whisper model (magic {found:#010x}, expected {MAGIC:#010x})")]
    BadMagic {
        /// The file.
        path: PathBuf,
        /// The first four bytes as a u32.
        found: u32,
    },
    /// The file ends inside a section.
    #[error("{path} is truncated: it ends inside {what} (at byte {offset})")]
    Truncated {
        /// The file.
        path: PathBuf,
        /// What was being read.
        what: String,
        /// Where the missing part starts.
        offset: u64,
    },
    /// A field holds a value no valid file has.
    #[error("{path} is malformed: {detail}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
}
/// One tensor header found by [`inspect`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    /// whisper.cpp's name, e.g. `encoder.blocks.0.attn.query.weight`.
    pub name: String,
    /// Element type.
    pub ttype: TensorType,
    /// Dimensions, innermost first (numpy shape reversed).
    pub ne: Vec<i64>,
    /// Bytes of data.
    pub nbytes: u64,
    /// Where the data starts in the file.
    pub offset: u64,
}

/// What [`inspect`] learns about a ggml file.
#[derive(Debug, Clone)]
pub struct GgmlInfo {
    /// The header.
    pub hparams: Hparams,
    /// Number of tokens in the vocabulary section (whisper.cpp adds the rest).
    pub n_vocab_tokens: usize,
    /// Every tensor, in file order.
    pub tensors: Vec<TensorInfo>,
    /// File size in bytes.
    pub file_size: u64,
    /// `n_vocab >= 51865`.
    pub multilingual: bool,
    /// `tiny`, `base`, `small`, `medium`, `large` or `unknown`.
    pub model_size: &'static str,
}

impl GgmlInfo {
    /// The tensor called `name`.
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }
}

// Bounds a valid Whisper file stays far inside; they stop a corrupt length
// from turning into a huge allocation.
const MAX_TOKENS: i32 = 1 << 20;
const MAX_NAME_LEN: i32 = 1024;
const MAX_DIMS: i32 = 4;

/// Reads the header and walks every tensor header of a ggml Whisper file,
/// checking that each tensor's data fits in the file. Does not load weights.
pub fn inspect(path: &Path) -> Result<GgmlInfo, GgmlError> {
    let io_err = |source| GgmlError::Io {
        path: path.to_owned(),
        source,
    };
    let file = File::open(path).map_err(io_err)?;
    let file_size = file.metadata().map_err(io_err)?.len();
    let mut r = Walker {
        reader: BufReader::new(file),
        pos: 0,
        size: file_size,
        path,
    };

    let magic = r.i32("the magic")? as u32;
    if magic != MAGIC {
        return Err(GgmlError::BadMagic {
            path: path.to_owned(),
            found: magic,
        });
    }
    let mut raw = [0; 11];
    for v in &mut raw {
        *v = r.i32("the hyper-parameters")?;
    }
    let hparams = Hparams::from_array(raw);

    let n_mel = r.i32("the mel filters")?;
    let n_fft = r.i32("the mel filters")?;
    if !(0..=1024).contains(&n_mel) || !(0..=4096).contains(&n_fft) {
        return Err(r.malformed(format!("mel filter size {n_mel} × {n_fft}")));
    }
    r.skip(4 * n_mel as u64 * n_fft as u64, "the mel filters")?;

    let n_tokens = r.i32("the vocabulary")?;
    if !(0..=MAX_TOKENS).contains(&n_tokens) {
        return Err(r.malformed(format!("vocabulary of {n_tokens} tokens")));
    }
    for _ in 0..n_tokens {
        let len = r.i32("the vocabulary")?;
        if len < 0 {
            return Err(r.malformed(format!("token of length {len}")));
        }
        r.skip(len as u64, "the vocabulary")?;
    }

    let mut tensors = Vec::new();
    while r.pos < r.size {
        let what = format!("tensor header #{}", tensors.len());
        let n_dims = r.i32(&what)?;
        let name_len = r.i32(&what)?;
        let code = r.i32(&what)?;
        if !(1..=MAX_DIMS).contains(&n_dims) || !(1..=MAX_NAME_LEN).contains(&name_len) {
            return Err(r.malformed(format!("{what}: {n_dims} dims, name of {name_len} bytes")));
        }
        let mut ne = Vec::with_capacity(n_dims as usize);
        for _ in 0..n_dims {
            let n = r.i32(&what)?;
            if n <= 0 {
                return Err(r.malformed(format!("{what}: dimension {n}")));
            }
            ne.push(i64::from(n));
        }
        let mut name = vec![0; name_len as usize];
        r.fill(&mut name, &what)?;
        let name = String::from_utf8_lossy(&name).into_owned();
        let ttype = TensorType::from_code(code);
        let nbytes = tensor_bytes(ttype, &ne)
            .ok_or_else(|| r.malformed(format!("tensor `{name}`: type {code} with ne {ne:?}")))?;
        let offset = r.pos;
        r.skip(nbytes, &format!("the data of tensor `{name}`"))?;
        tensors.push(TensorInfo {
            name,
            ttype,
            ne,
            nbytes,
            offset,
        });
    }

    Ok(GgmlInfo {
        hparams,
        n_vocab_tokens: n_tokens as usize,
        tensors,
        file_size,
        multilingual: hparams.is_multilingual(),
        model_size: hparams.model_size(),
    })
}

fn tensor_bytes(ttype: TensorType, ne: &[i64]) -> Option<u64> {
    let (block, block_bytes) = ttype.block()?;
    let row = *ne.first()? as u64;
    if row % block != 0 {
        return None;
    }
    ne[1..]
        .iter()
        .try_fold(row / block * block_bytes, |acc, &n| {
            acc.checked_mul(n as u64)
        })
}

/// Sequential reader that knows the file size, so a short file is reported
/// as truncated before any allocation or seek past the end.
struct Walker<'a> {
    reader: BufReader<File>,
    pos: u64,
    size: u64,
    path: &'a Path,
}

impl Walker<'_> {
    fn truncated(&self, what: &str) -> GgmlError {
        GgmlError::Truncated {
            path: self.path.to_owned(),
            what: what.to_owned(),
            offset: self.size,
        }
    }

    fn malformed(&self, detail: String) -> GgmlError {
        GgmlError::Malformed {
            path: self.path.to_owned(),
            detail,
        }
    }

    fn fill(&mut self, buf: &mut [u8], what: &str) -> Result<(), GgmlError> {
        if self.size - self.pos < buf.len() as u64 {
            return Err(self.truncated(what));
        }
        self.reader
            .read_exact(buf)
            .map_err(|source| GgmlError::Io {
                path: self.path.to_owned(),
                source,
            })?;
        self.pos += buf.len() as u64;
        Ok(())
    }

    fn i32(&mut self, what: &str) -> Result<i32, GgmlError> {
        let mut b = [0; 4];
        self.fill(&mut b, what)?;
        Ok(i32::from_le_bytes(b))
    }

    fn skip(&mut self, n: u64, what: &str) -> Result<(), GgmlError> {
        if self.size - self.pos < n {
            return Err(self.truncated(what));
        }
        // Bounded by the file size above, so it fits an i64.
        self.reader
            .seek(SeekFrom::Current(n as i64))
            .map_err(|source| GgmlError::Io {
                path: self.path.to_owned(),
                source,
            })?;
        self.pos += n;
        Ok(())
    }
}
#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::ggml::{GgmlWriter, FTYPE_F16};

    fn hparams() -> Hparams {
        Hparams {
            n_vocab: 51865,
            n_audio_ctx: 2,
            n_audio_state: 4,
            n_audio_head: 1,
            n_audio_layer: 6,
            n_text_ctx: 2,
            n_text_state: 4,
            n_text_head: 1,
            n_text_layer: 1,
            n_mels: 2,
            ftype: FTYPE_F16,
        }
    }

    /// A small file and the offsets where a cut leaves a valid file (after
    /// the vocabulary and after each tensor).
    fn sample_with_boundaries() -> (Vec<u8>, Vec<usize>) {
        let mut w = GgmlWriter::new(Vec::new(), &hparams()).expect("header");
        w.write_mel_filters(2, 3, &[0.5; 6]).expect("mel");
        w.write_vocab(&[b"a".to_vec(), Vec::new(), b"<|endoftext|>".to_vec()])
            .expect("vocab");
        let mut boundaries = vec![w.written() as usize];
        w.write_tensor("x.weight", &[4, 2], TensorType::F16, &[1.0; 8])
            .expect("f16");
        boundaries.push(w.written() as usize);
        w.write_tensor("x.bias", &[1, 2], TensorType::F32, &[0.0, -1.0])
            .expect("f32");
        let n = w.written();
        let bytes = w.finish().expect("finish");
        assert_eq!(n, bytes.len() as u64);
        (bytes, boundaries)
    }

    fn sample() -> Vec<u8> {
        sample_with_boundaries().0
    }

    fn write_temp(bytes: &[u8]) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("m.bin");
        std::fs::write(&path, bytes).expect("write");
        (dir, path)
    }

    #[test]
    fn written_file_inspects_back() {
        let bytes = sample();
        let (_dir, path) = write_temp(&bytes);
        let info = inspect(&path).expect("inspect");
        assert_eq!(info.hparams, hparams());
        assert_eq!(info.n_vocab_tokens, 3);
        assert_eq!(info.file_size, bytes.len() as u64);
        assert!(info.multilingual);
        assert_eq!(info.model_size, "base");
        let names: Vec<_> = info.tensors.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["x.weight", "x.bias"]);
        let w = info.tensor("x.weight").expect("weight");
        assert_eq!(
            (w.ttype, w.ne.clone(), w.nbytes),
            (TensorType::F16, vec![4, 2], 16)
        );
        let b = info.tensor("x.bias").expect("bias");
        assert_eq!(
            (b.ttype, b.ne.clone(), b.nbytes),
            (TensorType::F32, vec![1, 2], 8)
        );
    }

    #[test]
    fn every_cut_is_truncated() {
        let (bytes, boundaries) = sample_with_boundaries();
        for cut in 0..bytes.len() {
            let (_dir, path) = write_temp(&bytes[..cut]);
            match inspect(&path) {
                Err(GgmlError::Truncated { .. }) => {}
                Ok(_) if boundaries.contains(&cut) => {}
                other => panic!("cut at {cut}: {other:?}"),
            }
        }
    }

    #[test]
    fn wrong_magic_is_refused() {
        let mut bytes = sample();
        bytes[0] ^= 0xff;
        let (_dir, path) = write_temp(&bytes);
        assert!(matches!(inspect(&path), Err(GgmlError::BadMagic { .. })));
    }

    #[test]
    fn quantised_sizes_follow_blocks() {
        assert_eq!(
            tensor_bytes(TensorType::Other(8), &[64, 3]),
            Some(2 * 34 * 3)
        );
        assert_eq!(tensor_bytes(TensorType::Other(2), &[33]), None);
        assert_eq!(tensor_bytes(TensorType::Other(99), &[32]), None);
    }
}
