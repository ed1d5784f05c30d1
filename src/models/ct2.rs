//! Reader of CTranslate2's `model.bin`: the variable index (name, shape, dtype,
//! where the data lies) and typed access to one variable's values.
//!
//! It owns the binary layout only; it knows nothing of Whisper's variable
//! names or of ggml. Data is read on demand, so a multi-gigabyte model is never
//! held in memory whole.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::Path;

use half::{bf16, f16};

/// The only binary version this reader understands (CTranslate2 3.x/4.x).
pub const SUPPORTED_VERSION: u32 = 6;

/// Ways a `model.bin` can fail to read.
#[derive(Debug, thiserror::Error)]
pub enum Ct2Error {
    /// The underlying read failed for a reason other than a short file.
    #[error("read failed")]
    Io(#[from] io::Error),
    /// The header carries a binary version this reader does not know.
    #[error(
        "not a supported CTranslate2 model: binary version {version} (expected {SUPPORTED_VERSION})"
    )]
    UnsupportedVersion {
        /// The version found in the file.
        version: u32,
    },
    /// The file ends before the structure it promises.
    #[error("file is truncated: it ends inside {what} (at byte {offset})")]
    Truncated {
        /// What was being read when the file ended.
        what: String,
        /// Byte offset where the missing part starts.
        offset: u64,
    },
    /// A structural field holds a value no valid file has.
    #[error("malformed file: {0}")]
    Malformed(String),
    /// A variable has a dtype code outside the known table.
    #[error("variable `{name}` has unknown dtype code {code}")]
    UnknownDtype {
        /// Variable name.
        name: String,
        /// The dtype byte.
        code: u8,
    },
    /// A variable asked for as numbers has a dtype that cannot serve.
    #[error("variable `{name}` has dtype {dtype}, which cannot be read as {wanted}")]
    WrongDtype {
        /// Variable name.
        name: String,
        /// Its dtype.
        dtype: &'static str,
        /// What the caller wanted.
        wanted: &'static str,
    },
}

/// Element type of a variable, numbered as in CTranslate2's `DataType` enum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DType {
    /// IEEE single precision.
    F32,
    /// Signed 8-bit integer (quantised weights, flags).
    I8,
    /// Signed 16-bit integer (quantised weights, head counts).
    I16,
    /// Signed 32-bit integer.
    I32,
    /// IEEE half precision.
    F16,
    /// bfloat16.
    Bf16,
}

impl DType {
    /// Decodes the dtype byte of the file.
    pub fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            0 => Self::F32,
            1 => Self::I8,
            2 => Self::I16,
            3 => Self::I32,
            4 => Self::F16,
            5 => Self::Bf16,
            _ => return None,
        })
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Self::I8 => 1,
            Self::I16 | Self::F16 | Self::Bf16 => 2,
            Self::F32 | Self::I32 => 4,
        }
    }

    /// CTranslate2's name for the type (`"float16"`, `"int8"`, …).
    pub fn name(self) -> &'static str {
        match self {
            Self::F32 => "float32",
            Self::I8 => "int8",
            Self::I16 => "int16",
            Self::I32 => "int32",
            Self::F16 => "float16",
            Self::Bf16 => "bfloat16",
        }
    }
}

/// One variable's header; its data is read with [`Ct2Model::read_f32`].
#[derive(Debug, Clone)]
pub struct Variable {
    /// Slash-separated scope name, e.g. `encoder/conv1/weight`.
    pub name: String,
    /// Shape, outermost first (numpy order); empty for a scalar.
    pub shape: Vec<usize>,
    /// Element type.
    pub dtype: DType,
    /// Where the data starts in the file.
    offset: u64,
    /// Data length in bytes (checked against shape × dtype on open).
    nbytes: u64,
}

impl Variable {
    /// Number of elements (1 for a scalar).
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    /// Whether the variable holds no element.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// An indexed `model.bin`: header, variables and aliases.
#[derive(Debug)]
pub struct Ct2Model<R> {
    reader: R,
    /// Model spec name, e.g. `WhisperSpec`.
    pub spec: String,
    /// Spec revision.
    pub revision: u32,
    variables: Vec<Variable>,
    by_name: HashMap<String, usize>,
    /// `(alias, target)` pairs; CTranslate2 writes these for shared weights.
    pub aliases: Vec<(String, String)>,
}

impl Ct2Model<BufReader<File>> {
    /// Opens and indexes `path`, reading headers only.
    pub fn open(path: &Path) -> Result<Self, Ct2Error> {
        Self::from_reader(BufReader::new(File::open(path)?))
    }
}

impl<R: Read + Seek> Ct2Model<R> {
    /// Indexes a model from any seekable source, checking every variable's
    /// data lies inside it.
    pub fn from_reader(mut reader: R) -> Result<Self, Ct2Error> {
        let file_len = reader.seek(SeekFrom::End(0))?;
        reader.seek(SeekFrom::Start(0))?;
        let mut cur = Cursor { reader, pos: 0 };

        let version = cur.u32("the header")?;
        if version != SUPPORTED_VERSION {
            return Err(Ct2Error::UnsupportedVersion { version });
        }
        let spec = cur.string("the header")?;
        let revision = cur.u32("the header")?;
        let n_vars = cur.u32("the header")?;

        let mut variables = Vec::new();
        let mut by_name = HashMap::new();
        for index in 0..n_vars {
            let what = format!("variable #{index}");
            let name = cur.string(&what)?;
            let what = format!("variable `{name}`");
            let rank = cur.u8(&what)?;
            let mut shape = Vec::with_capacity(usize::from(rank));
            for _ in 0..rank {
                shape.push(cur.u32(&what)? as usize);
            }
            let code = cur.u8(&what)?;
            let dtype = DType::from_code(code).ok_or_else(|| Ct2Error::UnknownDtype {
                name: name.clone(),
                code,
            })?;
            let nbytes = u64::from(cur.u32(&what)?);
            let expected = shape
                .iter()
                .try_fold(dtype.size() as u64, |acc, &d| acc.checked_mul(d as u64));
            if expected != Some(nbytes) {
                return Err(Ct2Error::Malformed(format!(
                    "variable `{name}` of shape {shape:?} and dtype {} declares {nbytes} bytes",
                    dtype.name()
                )));
            }
            let offset = cur.pos;
            if offset + nbytes > file_len {
                return Err(Ct2Error::Truncated {
                    what: format!("the data of {what}"),
                    offset: file_len,
                });
            }
            cur.skip(nbytes)?;
            by_name.insert(name.clone(), variables.len());
            variables.push(Variable {
                name,
                shape,
                dtype,
                offset,
                nbytes,
            });
        }

        let n_aliases = cur.u32("the alias table")?;
        let mut aliases = Vec::new();
        for _ in 0..n_aliases {
            let alias = cur.string("the alias table")?;
            let target = cur.string("the alias table")?;
            aliases.push((alias, target));
        }

        Ok(Self {
            reader: cur.reader,
            spec,
            revision,
            variables,
            by_name,
            aliases,
        })
    }

    /// All variables in file order.
    pub fn variables(&self) -> &[Variable] {
        &self.variables
    }

    /// The variable called `name`, following an alias if `name` is one.
    pub fn get(&self, name: &str) -> Option<&Variable> {
        let index = self.by_name.get(name).or_else(|| {
            let (_, target) = self.aliases.iter().find(|(alias, _)| alias == name)?;
            self.by_name.get(target)
        })?;
        self.variables.get(*index)
    }

    /// Reads a variable's raw little-endian bytes.
    pub fn read_bytes(&mut self, var: &Variable) -> Result<Vec<u8>, Ct2Error> {
        let len = usize::try_from(var.nbytes)
            .map_err(|_| Ct2Error::Malformed(format!("variable `{}` is too large", var.name)))?;
        let mut buf = vec![0; len];
        self.reader.seek(SeekFrom::Start(var.offset))?;
        self.reader.read_exact(&mut buf)?;
        Ok(buf)
    }

    /// Reads a variable's values as f32, whatever its element type; integers
    /// come back as their plain values (no dequantisation here).
    pub fn read_f32(&mut self, var: &Variable) -> Result<Vec<f32>, Ct2Error> {
        let bytes = self.read_bytes(var)?;
        Ok(match var.dtype {
            DType::F32 => bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            DType::F16 => bytes
                .chunks_exact(2)
                .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            DType::Bf16 => bytes
                .chunks_exact(2)
                .map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            DType::I8 => bytes.iter().map(|&b| f32::from(b as i8)).collect(),
            DType::I16 => bytes
                .chunks_exact(2)
                .map(|c| f32::from(i16::from_le_bytes([c[0], c[1]])))
                .collect(),
            // i32 → f32 is lossy above 2^24; no Whisper tensor is int32, and
            // scalars go through `read_scalar_i64`.
            DType::I32 => bytes
                .chunks_exact(4)
                .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f32)
                .collect(),
        })
    }

    /// Reads a one-element integer variable (e.g. `encoder/num_heads`).
    pub fn read_scalar_i64(&mut self, var: &Variable) -> Result<i64, Ct2Error> {
        let wrong = || Ct2Error::WrongDtype {
            name: var.name.clone(),
            dtype: var.dtype.name(),
            wanted: "an integer scalar",
        };
        if var.len() != 1 {
            return Err(wrong());
        }
        let b = self.read_bytes(var)?;
        Ok(match var.dtype {
            DType::I8 => i64::from(b[0] as i8),
            DType::I16 => i64::from(i16::from_le_bytes([b[0], b[1]])),
            DType::I32 => i64::from(i32::from_le_bytes([b[0], b[1], b[2], b[3]])),
            DType::F32 | DType::F16 | DType::Bf16 => return Err(wrong()),
        })
    }
}

/// Sequential header reader that turns a short read into `Truncated`.
struct Cursor<R> {
    reader: R,
    pos: u64,
}

impl<R: Read + Seek> Cursor<R> {
    fn fill(&mut self, buf: &mut [u8], what: &str) -> Result<(), Ct2Error> {
        match self.reader.read_exact(buf) {
            Ok(()) => {
                self.pos += buf.len() as u64;
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Err(Ct2Error::Truncated {
                what: what.to_owned(),
                offset: self.pos,
            }),
            Err(e) => Err(e.into()),
        }
    }

    fn u8(&mut self, what: &str) -> Result<u8, Ct2Error> {
        let mut b = [0; 1];
        self.fill(&mut b, what)?;
        Ok(b[0])
    }

    fn u32(&mut self, what: &str) -> Result<u32, Ct2Error> {
        let mut b = [0; 4];
        self.fill(&mut b, what)?;
        Ok(u32::from_le_bytes(b))
    }

    /// `u16` length counting a trailing NUL, then the bytes.
    fn string(&mut self, what: &str) -> Result<String, Ct2Error> {
        let mut len = [0; 2];
        self.fill(&mut len, what)?;
        let mut bytes = vec![0; usize::from(u16::from_le_bytes(len))];
        self.fill(&mut bytes, what)?;
        if bytes.pop() != Some(0) {
            return Err(Ct2Error::Malformed(format!(
                "a string in {what} lacks its terminating NUL (at byte {})",
                self.pos
            )));
        }
        String::from_utf8(bytes)
            .map_err(|_| Ct2Error::Malformed(format!("a string in {what} is not UTF-8")))
    }

    fn skip(&mut self, n: u64) -> Result<(), Ct2Error> {
        // Bounds were checked against the file length by the caller.
        let n = i64::try_from(n).map_err(|_| Ct2Error::Malformed("variable too large".into()))?;
        self.reader.seek(SeekFrom::Current(n))?;
        self.pos += n as u64;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor as IoCursor;

    fn put_str(out: &mut Vec<u8>, s: &str) {
        out.extend_from_slice(&(s.len() as u16 + 1).to_le_bytes());
        out.extend_from_slice(s.as_bytes());
        out.push(0);
    }

    fn put_var(out: &mut Vec<u8>, name: &str, shape: &[u32], dtype: u8, data: &[u8]) {
        put_str(out, name);
        out.push(shape.len() as u8);
        for d in shape {
            out.extend_from_slice(&d.to_le_bytes());
        }
        out.push(dtype);
        out.extend_from_slice(&(data.len() as u32).to_le_bytes());
        out.extend_from_slice(data);
    }

    fn sample() -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&6u32.to_le_bytes());
        put_str(&mut out, "WhisperSpec");
        out.extend_from_slice(&3u32.to_le_bytes());
        out.extend_from_slice(&3u32.to_le_bytes());
        put_var(&mut out, "heads", &[], 2, &6i16.to_le_bytes());
        let halves: Vec<u8> = [1.5f32, -2.0]
            .iter()
            .flat_map(|v| f16::from_f32(*v).to_le_bytes())
            .collect();
        put_var(&mut out, "w", &[2], 4, &halves);
        put_var(&mut out, "q", &[1, 2], 1, &[0x7f, 0x81]);
        out.extend_from_slice(&1u32.to_le_bytes());
        put_str(&mut out, "alias");
        put_str(&mut out, "w");
        out
    }

    #[test]
    fn reads_header_variables_and_aliases() {
        let mut m = Ct2Model::from_reader(IoCursor::new(sample())).expect("valid sample");
        assert_eq!(m.spec, "WhisperSpec");
        assert_eq!(m.revision, 3);
        assert_eq!(m.variables().len(), 3);
        let heads = m.get("heads").cloned().expect("heads present");
        assert_eq!(m.read_scalar_i64(&heads).expect("scalar"), 6);
        let w = m.get("alias").cloned().expect("alias resolves");
        assert_eq!(w.name, "w");
        assert_eq!(m.read_f32(&w).expect("f16 data"), vec![1.5, -2.0]);
        let q = m.get("q").cloned().expect("q present");
        assert_eq!(q.dtype, DType::I8);
        assert_eq!(m.read_f32(&q).expect("i8 data"), vec![127.0, -127.0]);
    }

    #[test]
    fn every_cut_is_reported_as_truncated() {
        let full = sample();
        for cut in 0..full.len() {
            let err = Ct2Model::from_reader(IoCursor::new(full[..cut].to_vec()))
                .expect_err("a cut file must not parse");
            assert!(
                matches!(err, Ct2Error::Truncated { .. }),
                "cut {cut}: {err}"
            );
        }
    }

    #[test]
    fn other_versions_are_refused() {
        let mut bytes = sample();
        bytes[0] = 5;
        let err = Ct2Model::from_reader(IoCursor::new(bytes)).expect_err("version 5");
        assert!(matches!(err, Ct2Error::UnsupportedVersion { version: 5 }));
    }

    #[test]
    fn size_that_disagrees_with_shape_is_malformed() {
        let mut out = Vec::new();
        out.extend_from_slice(&6u32.to_le_bytes());
        put_str(&mut out, "WhisperSpec");
        out.extend_from_slice(&3u32.to_le_bytes());
        out.extend_from_slice(&1u32.to_le_bytes());
        put_var(&mut out, "w", &[3], 0, &[0; 8]);
        out.extend_from_slice(&0u32.to_le_bytes());
        let err = Ct2Model::from_reader(IoCursor::new(out)).expect_err("8 bytes for 3 f32");
        assert!(matches!(err, Ct2Error::Malformed(_)), "{err}");
    }
}
