//! Which CTranslate2 Whisper variable becomes which whisper.cpp tensor: the
//! hyper-parameters read off the variables' shapes, and one [`Job`] per
//! source variable saying how to split, type and lay it out.
//!
//! It reads headers only (plus the two head-count scalars); the importer
//! reads the data and writes the file.

use std::io::{Read, Seek};

use super::ct2::Ct2Model;
use super::ggml::{Hparams, TensorType, FTYPE_F16};
use super::import::ImportError;

/// One CT2 variable, checked against `shape`, split along dim 0 into
/// `outputs.len()` equal parts.
#[derive(Debug, Clone)]
pub struct Job {
    /// CT2 variable name, e.g. `encoder/layer_0/self_attention/linear_0/weight`.
    pub source: String,
    /// The shape the variable must have (numpy order).
    pub shape: Vec<usize>,
    /// One entry per part along dim 0.
    pub outputs: Vec<Output>,
}

/// What becomes of one part of a [`Job`].
#[derive(Debug, Clone)]
pub enum Output {
    /// Written as a ggml tensor.
    Tensor {
        /// whisper.cpp's name.
        name: String,
        /// F16 for matrices, conv kernels and the token embedding; F32 else.
        ttype: TensorType,
        /// Written as a `(n, 1)` column (ne `[1, n]`), as conv biases are.
        column: bool,
    },
    /// A key bias: Whisper has none, so it must be all zero and is dropped.
    ZeroBias,
}

impl Output {
    fn tensor(name: String, ttype: TensorType) -> Self {
        Self::Tensor {
            name,
            ttype,
            column: false,
        }
    }
}

/// Hyper-parameters and jobs for one model.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The ggml header.
    pub hparams: Hparams,
    /// Source variables in write order.
    pub jobs: Vec<Job>,
}

impl Plan {
    /// Number of tensors the file will hold.
    pub fn tensor_count(&self) -> usize {
        self.jobs
            .iter()
            .flat_map(|j| &j.outputs)
            .filter(|o| matches!(o, Output::Tensor { .. }))
            .count()
    }

    /// Reads the shapes of `model` and lays out the conversion.
    pub fn build<R: Read + Seek>(model: &mut Ct2Model<R>) -> Result<Self, ImportError> {
        let conv1 = shape(model, "encoder/conv1/weight", 3)?;
        let (n_audio_state, n_mels) = (conv1[0], conv1[1]);
        let enc_pos = shape(model, "encoder/position_encodings/encodings", 2)?;
        let embedding = shape(model, "decoder/embeddings/weight", 2)?;
        let (n_vocab, n_text_state) = (embedding[0], embedding[1]);
        let dec_pos = shape(model, "decoder/position_encodings/encodings", 2)?;
        if n_text_state != n_audio_state {
            // whisper.cpp asserts the two widths are equal.
            return Err(odd(
                "decoder/embeddings/weight",
                &embedding,
                format!("[n_vocab, {n_audio_state}]"),
            ));
        }
        let n = n_audio_state;
        let (n_audio_layer, n_text_layer) = (layers(model, "encoder")?, layers(model, "decoder")?);
        let hparams = Hparams {
            n_vocab: to_i32(n_vocab, "decoder/embeddings/weight")?,
            n_audio_ctx: to_i32(enc_pos[0], "encoder/position_encodings/encodings")?,
            n_audio_state: to_i32(n, "encoder/conv1/weight")?,
            n_audio_head: heads(model, "encoder/num_heads", n)?,
            n_audio_layer: to_i32(n_audio_layer, "encoder/layer_N")?,
            n_text_ctx: to_i32(dec_pos[0], "decoder/position_encodings/encodings")?,
            n_text_state: to_i32(n, "decoder/embeddings/weight")?,
            n_text_head: heads(model, "decoder/num_heads", n)?,
            n_text_layer: to_i32(n_text_layer, "decoder/layer_N")?,
            n_mels: to_i32(n_mels, "encoder/conv1/weight")?,
            ftype: FTYPE_F16,
        };
        let enc_ff = shape(model, "encoder/layer_0/ffn/linear_0/weight", 2)?[0];
        let dec_ff = shape(model, "decoder/layer_0/ffn/linear_0/weight", 2)?[0];

        let mut p = Builder::default();
        p.conv("encoder/conv1", "encoder.conv1", vec![n, n_mels, 3]);
        p.conv("encoder/conv2", "encoder.conv2", vec![n, n, 3]);
        p.whole(
            "encoder/position_encodings/encodings",
            vec![enc_pos[0], n],
            "encoder.positional_embedding",
            TensorType::F32,
        );
        for i in 0..n_audio_layer {
            let (src, dst) = (format!("encoder/layer_{i}"), format!("encoder.blocks.{i}"));
            p.self_attention(&src, &dst, n);
            p.ffn(&src, &dst, n, enc_ff);
        }
        p.norm("encoder/layer_norm", "encoder.ln_post", n);

        p.whole(
            "decoder/embeddings/weight",
            vec![n_vocab, n],
            "decoder.token_embedding.weight",
            TensorType::F16,
        );
        p.whole(
            "decoder/position_encodings/encodings",
            vec![dec_pos[0], n],
            "decoder.positional_embedding",
            TensorType::F32,
        );
        for i in 0..n_text_layer {
            let (src, dst) = (format!("decoder/layer_{i}"), format!("decoder.blocks.{i}"));
            p.self_attention(&src, &dst, n);
            p.cross_attention(&src, &dst, n);
            p.ffn(&src, &dst, n, dec_ff);
        }
        p.norm("decoder/layer_norm", "decoder.ln", n);

        Ok(Self {
            hparams,
            jobs: p.jobs,
        })
    }
}

#[derive(Default)]
struct Builder {
    jobs: Vec<Job>,
}

impl Builder {
    fn whole(&mut self, source: &str, shape: Vec<usize>, name: &str, ttype: TensorType) {
        self.jobs.push(Job {
            source: source.to_owned(),
            shape,
            outputs: vec![Output::tensor(name.to_owned(), ttype)],
        });
    }

    fn conv(&mut self, src: &str, dst: &str, kernel: Vec<usize>) {
        let out_channels = kernel[0];
        self.whole(
            &format!("{src}/weight"),
            kernel,
            &format!("{dst}.weight"),
            TensorType::F16,
        );
        self.jobs.push(Job {
            source: format!("{src}/bias"),
            shape: vec![out_channels],
            outputs: vec![Output::Tensor {
                name: format!("{dst}.bias"),
                ttype: TensorType::F32,
                column: true,
            }],
        });
    }

    fn norm(&mut self, src: &str, dst: &str, n: usize) {
        let f32 = TensorType::F32;
        self.whole(
            &format!("{src}/gamma"),
            vec![n],
            &format!("{dst}.weight"),
            f32,
        );
        self.whole(&format!("{src}/beta"), vec![n], &format!("{dst}.bias"), f32);
    }

    /// A (possibly fused) linear layer: `parts` are `(ggml prefix, has bias)`
    /// stacked along the output dimension, each `n_out` rows of `n_in`.
    fn linear(&mut self, src: &str, n_in: usize, n_out: usize, parts: &[(String, bool)]) {
        let rows = n_out * parts.len();
        self.jobs.push(Job {
            source: format!("{src}/weight"),
            shape: vec![rows, n_in],
            outputs: parts
                .iter()
                .map(|(dst, _)| Output::tensor(format!("{dst}.weight"), TensorType::F16))
                .collect(),
        });
        self.jobs.push(Job {
            source: format!("{src}/bias"),
            shape: vec![rows],
            outputs: parts
                .iter()
                .map(|(dst, has_bias)| match has_bias {
                    true => Output::tensor(format!("{dst}.bias"), TensorType::F32),
                    false => Output::ZeroBias,
                })
                .collect(),
        });
    }

    fn self_attention(&mut self, src: &str, dst: &str, n: usize) {
        let (src, attn) = (format!("{src}/self_attention"), format!("{dst}.attn"));
        self.norm(&format!("{src}/layer_norm"), &format!("{dst}.attn_ln"), n);
        let qkv = [
            (format!("{attn}.query"), true),
            (format!("{attn}.key"), false),
            (format!("{attn}.value"), true),
        ];
        self.linear(&format!("{src}/linear_0"), n, n, &qkv);
        self.linear(
            &format!("{src}/linear_1"),
            n,
            n,
            &[(format!("{attn}.out"), true)],
        );
    }

    fn cross_attention(&mut self, src: &str, dst: &str, n: usize) {
        let (src, attn) = (format!("{src}/attention"), format!("{dst}.cross_attn"));
        self.norm(
            &format!("{src}/layer_norm"),
            &format!("{dst}.cross_attn_ln"),
            n,
        );
        self.linear(
            &format!("{src}/linear_0"),
            n,
            n,
            &[(format!("{attn}.query"), true)],
        );
        let kv = [
            (format!("{attn}.key"), false),
            (format!("{attn}.value"), true),
        ];
        self.linear(&format!("{src}/linear_1"), n, n, &kv);
        self.linear(
            &format!("{src}/linear_2"),
            n,
            n,
            &[(format!("{attn}.out"), true)],
        );
    }

    fn ffn(&mut self, src: &str, dst: &str, n: usize, n_ff: usize) {
        let src = format!("{src}/ffn");
        self.norm(&format!("{src}/layer_norm"), &format!("{dst}.mlp_ln"), n);
        self.linear(
            &format!("{src}/linear_0"),
            n,
            n_ff,
            &[(format!("{dst}.mlp.0"), true)],
        );
        self.linear(
            &format!("{src}/linear_1"),
            n_ff,
            n,
            &[(format!("{dst}.mlp.2"), true)],
        );
    }
}

/// The shape of a required variable, checked for rank and non-zero sizes.
fn shape<R: Read + Seek>(
    model: &Ct2Model<R>,
    name: &str,
    rank: usize,
) -> Result<Vec<usize>, ImportError> {
    let var = model.get(name).ok_or_else(|| missing(name))?;
    if var.shape.len() != rank || var.shape.contains(&0) {
        return Err(odd(name, &var.shape, format!("{rank} non-zero dimensions")));
    }
    Ok(var.shape.clone())
}

/// Number of consecutive `{side}/layer_N` blocks, at least one.
fn layers<R: Read + Seek>(model: &Ct2Model<R>, side: &str) -> Result<usize, ImportError> {
    let probe = |i: usize| format!("{side}/layer_{i}/self_attention/linear_0/weight");
    let count = (0..)
        .take_while(|i| model.get(&probe(*i)).is_some())
        .count();
    match count {
        0 => Err(missing(&probe(0))),
        n => Ok(n),
    }
}

fn heads<R: Read + Seek>(
    model: &mut Ct2Model<R>,
    name: &str,
    width: usize,
) -> Result<i32, ImportError> {
    let var = model.get(name).cloned().ok_or_else(|| missing(name))?;
    let value = model
        .read_scalar_i64(&var)
        .map_err(|source| ImportError::Variable {
            name: name.to_owned(),
            source,
        })?;
    match usize::try_from(value) {
        Ok(h) if h > 0 && width % h == 0 => to_i32(h, name),
        _ => Err(ImportError::BadValue {
            name: name.to_owned(),
            value: value.to_string(),
            expected: format!("a positive divisor of the width {width}"),
        }),
    }
}

fn to_i32(n: usize, name: &str) -> Result<i32, ImportError> {
    i32::try_from(n).map_err(|_| ImportError::BadValue {
        name: name.to_owned(),
        value: n.to_string(),
        expected: "a size that fits in an i32".to_owned(),
    })
}

pub(super) fn missing(name: &str) -> ImportError {
    ImportError::MissingTensor {
        name: name.to_owned(),
    }
}

pub(super) fn odd(name: &str, shape: &[usize], expected: String) -> ImportError {
    ImportError::OddShape {
        name: name.to_owned(),
        shape: shape.to_vec(),
        expected,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::fixture;
    use std::io::Cursor;

    fn model(vars: &[fixture::Var]) -> Ct2Model<Cursor<Vec<u8>>> {
        Ct2Model::from_reader(Cursor::new(fixture::encode(vars))).expect("valid fixture")
    }

    #[test]
    fn one_layer_model_plans_50_tensors_from_its_shapes() {
        let plan = Plan::build(&mut model(&fixture::whisper_vars(false))).expect("plan");
        assert_eq!(plan.tensor_count(), 50);
        assert_eq!(plan.hparams.n_audio_state, fixture::N_STATE as i32);
        assert_eq!(plan.hparams.n_audio_head, i32::from(fixture::N_HEAD));
        for job in &plan.jobs {
            assert_eq!(job.shape[0] % job.outputs.len(), 0, "{}", job.source);
        }
        let outputs = plan.jobs.iter().flat_map(|j| &j.outputs);
        let dropped = outputs.filter(|o| matches!(o, Output::ZeroBias)).count();
        assert_eq!(
            dropped, 3,
            "two self-attention keys, one cross-attention key"
        );
    }

    #[test]
    fn head_count_must_divide_the_width() {
        let mut vars = fixture::whisper_vars(false);
        for var in vars.iter_mut().filter(|v| v.name == "decoder/num_heads") {
            var.data = fixture::Data::I16(3);
        }
        let err = Plan::build(&mut model(&vars)).expect_err("3 does not divide 8");
        assert!(matches!(err, ImportError::BadValue { name, .. } if name == "decoder/num_heads"));
    }
}
