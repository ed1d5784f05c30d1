//! Streaming writer of a ggml Whisper file; it checks sizes, not meaning.

use std::io::{self, Write};

use half::f16;

use super::{Hparams, TensorType, MAGIC};

/// Streams a ggml Whisper file; sections must be written in order: header,
/// mel filters, vocabulary, tensors.
pub struct GgmlWriter<W> {
    out: W,
    written: u64,
}

impl<W: Write> GgmlWriter<W> {
    /// Starts a file with the magic and hyper-parameters.
    pub fn new(mut out: W, hparams: &Hparams) -> io::Result<Self> {
        let mut head = Vec::with_capacity(48);
        head.extend_from_slice(&MAGIC.to_le_bytes());
        for v in hparams.to_array() {
            head.extend_from_slice(&v.to_le_bytes());
        }
        out.write_all(&head)?;
        Ok(Self {
            out,
            written: head.len() as u64,
        })
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    fn put(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.out.write_all(bytes)?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    fn put_i32(&mut self, v: i32) -> io::Result<()> {
        self.put(&v.to_le_bytes())
    }

    /// Writes the `n_mel × n_fft` filterbank (row-major).
    pub fn write_mel_filters(
        &mut self,
        n_mel: usize,
        n_fft: usize,
        data: &[f32],
    ) -> io::Result<()> {
        if data.len() != n_mel * n_fft {
            return Err(invalid("mel filter data does not match n_mel × n_fft"));
        }
        self.put_i32(to_i32(n_mel)?)?;
        self.put_i32(to_i32(n_fft)?)?;
        self.put(&f32_bytes(data))
    }

    /// Writes the token list.
    pub fn write_vocab(&mut self, tokens: &[Vec<u8>]) -> io::Result<()> {
        self.put_i32(to_i32(tokens.len())?)?;
        for token in tokens {
            self.put_i32(to_i32(token.len())?)?;
            self.put(token)?;
        }
        Ok(())
    }

    /// Writes one tensor, converting `values` to `ttype` (F32 or F16).
    pub fn write_tensor(
        &mut self,
        name: &str,
        ne: &[usize],
        ttype: TensorType,
        values: &[f32],
    ) -> io::Result<()> {
        if ne.iter().product::<usize>() != values.len() {
            return Err(invalid("tensor data does not match its dimensions"));
        }
        let data = match ttype {
            TensorType::F32 => f32_bytes(values),
            TensorType::F16 => values
                .iter()
                .flat_map(|v| f16::from_f32(*v).to_le_bytes())
                .collect(),
            TensorType::Other(_) => return Err(invalid("only f32 and f16 tensors are written")),
        };
        self.put_i32(to_i32(ne.len())?)?;
        self.put_i32(to_i32(name.len())?)?;
        self.put_i32(ttype.code())?;
        for &n in ne {
            self.put_i32(to_i32(n)?)?;
        }
        self.put(name.as_bytes())?;
        self.put(&data)
    }

    /// Flushes and returns the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.out.flush()?;
        Ok(self.out)
    }
}

fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

fn to_i32(n: usize) -> io::Result<i32> {
    i32::try_from(n).map_err(|_| invalid("a size does not fit the format's i32"))
}

fn invalid(msg: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn i32_at(bytes: &[u8], at: usize) -> i32 {
        i32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
    }

    #[test]
    fn tensor_record_is_header_dims_name_then_data() {
        let hparams = Hparams {
            n_vocab: 7,
            ..Hparams::default()
        };
        let mut w = GgmlWriter::new(Vec::new(), &hparams).expect("header");
        assert_eq!(w.written(), 48);
        w.write_tensor("ab", &[2, 1], TensorType::F16, &[1.0, -2.0])
            .expect("tensor");
        let bytes = w.finish().expect("finish");
        assert_eq!(
            u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]),
            MAGIC
        );
        assert_eq!(i32_at(&bytes, 4), 7);
        let t = &bytes[48..];
        assert_eq!([i32_at(t, 0), i32_at(t, 4), i32_at(t, 8)], [2, 2, 1]);
        assert_eq!([i32_at(t, 12), i32_at(t, 16)], [2, 1]);
        assert_eq!(&t[20..22], b"ab");
        assert_eq!(&t[22..], [0x00, 0x3c, 0x00, 0xc0]); // f16 1.0, -2.0
    }

    #[test]
    fn mismatched_sizes_are_refused() {
        let mut w = GgmlWriter::new(Vec::new(), &Hparams::default()).expect("header");
        assert!(w.write_mel_filters(2, 3, &[0.0; 5]).is_err());
        assert!(w
            .write_tensor("x", &[2, 2], TensorType::F32, &[0.0; 3])
            .is_err());
        assert!(w
            .write_tensor("x", &[1], TensorType::Other(8), &[0.0])
            .is_err());
    }
}
