//! Test-only synthetic CTranslate2 Whisper models: a few hundred numbers
//! laid out exactly like a faster-whisper directory, small enough to convert
//! in milliseconds and to check value by value.

use std::path::Path;

/// Width of every layer.
pub const N_STATE: usize = 8;
/// Attention heads.
pub const N_HEAD: i16 = 2;
/// Mel bands.
pub const N_MELS: usize = 4;
/// Encoder positions.
pub const N_AUDIO_CTX: usize = 6;
/// Decoder positions.
pub const N_TEXT_CTX: usize = 4;
/// Feed-forward width.
pub const N_FF: usize = 32;
/// Token embedding rows; the vocabulary file ends with `<|endoftext|>` at id 3.
pub const N_VOCAB: usize = 7;
/// `vocabulary.txt`: three byte-level tokens, end of text, three specials.
pub const VOCABULARY: &str =
    "!\nĠthe\nÃ©\n<|endoftext|>\n<|startoftranscript|>\n<|en|>\n<|notimestamps|>\n";

/// One variable's data.
#[derive(Debug, Clone)]
pub enum Data {
    /// float32 values.
    F32(Vec<f32>),
    /// int8 values (quantised weights).
    I8(Vec<i8>),
    /// One int16 scalar (head counts).
    I16(i16),
}

/// One variable of a synthetic `model.bin`.
#[derive(Debug, Clone)]
pub struct Var {
    /// CT2 name.
    pub name: String,
    /// numpy shape.
    pub shape: Vec<usize>,
    /// Values.
    pub data: Data,
}

/// The variables of a one-layer Whisper in CT2 layout. With `int8`, linear
/// weights and the embedding are quantised per row as CTranslate2 does and
/// gain a `…/weight_scale`.
pub fn whisper_vars(int8: bool) -> Vec<Var> {
    let n = N_STATE;
    let mut vars = Vec::new();
    let mut add = |name: String, shape: Vec<usize>| {
        let seed = vars.len();
        let len = shape.iter().product();
        vars.push(Var {
            name,
            shape,
            data: Data::F32(pattern(seed, len)),
        });
    };
    add("encoder/conv1/weight".into(), vec![n, N_MELS, 3]);
    add("encoder/conv1/bias".into(), vec![n]);
    add("encoder/conv2/weight".into(), vec![n, n, 3]);
    add("encoder/conv2/bias".into(), vec![n]);
    add(
        "encoder/position_encodings/encodings".into(),
        vec![N_AUDIO_CTX, n],
    );
    add("decoder/embeddings/weight".into(), vec![N_VOCAB, n]);
    add(
        "decoder/position_encodings/encodings".into(),
        vec![N_TEXT_CTX, n],
    );
    for side in ["encoder", "decoder"] {
        let layer = format!("{side}/layer_0");
        let mut linear = |name: String, rows: usize, cols: usize| {
            add(format!("{name}/weight"), vec![rows, cols]);
            add(format!("{name}/bias"), vec![rows]);
        };
        linear(format!("{layer}/self_attention/linear_0"), 3 * n, n);
        linear(format!("{layer}/self_attention/linear_1"), n, n);
        if side == "decoder" {
            linear(format!("{layer}/attention/linear_0"), n, n);
            linear(format!("{layer}/attention/linear_1"), 2 * n, n);
            linear(format!("{layer}/attention/linear_2"), n, n);
        }
        linear(format!("{layer}/ffn/linear_0"), N_FF, n);
        linear(format!("{layer}/ffn/linear_1"), n, N_FF);
        let mut norms = vec![format!("{layer}/self_attention/layer_norm")];
        if side == "decoder" {
            norms.push(format!("{layer}/attention/layer_norm"));
        }
        norms.push(format!("{layer}/ffn/layer_norm"));
        for norm in norms {
            add(format!("{norm}/gamma"), vec![n]);
            add(format!("{norm}/beta"), vec![n]);
        }
        add(format!("{side}/layer_norm/gamma"), vec![n]);
        add(format!("{side}/layer_norm/beta"), vec![n]);
    }
    // Whisper's keys have no bias; CT2 fills their slice of the fused bias with zeros.
    zero_rows(
        &mut vars,
        "encoder/layer_0/self_attention/linear_0/bias",
        n..2 * n,
    );
    zero_rows(
        &mut vars,
        "decoder/layer_0/self_attention/linear_0/bias",
        n..2 * n,
    );
    zero_rows(&mut vars, "decoder/layer_0/attention/linear_1/bias", 0..n);
    for side in ["encoder", "decoder"] {
        vars.push(Var {
            name: format!("{side}/num_heads"),
            shape: Vec::new(),
            data: Data::I16(N_HEAD),
        });
    }
    if int8 {
        quantise(&mut vars);
    }
    vars
}

/// Distinct values, all multiples of 1/16 so f16 holds them exactly.
fn pattern(seed: usize, len: usize) -> Vec<f32> {
    (0..len)
        .map(|i| ((seed * 31 + i * 17) % 29) as f32 / 16.0 - 0.875)
        .collect()
}

fn zero_rows(vars: &mut [Var], name: &str, rows: std::ops::Range<usize>) {
    if let Some(Var {
        data: Data::F32(v), ..
    }) = vars.iter_mut().find(|v| v.name == name)
    {
        v[rows].iter_mut().for_each(|x| *x = 0.0);
    }
}

/// CTranslate2's int8 scheme: per row `scale = 127 / max|w|`, `q = round(w * scale)`.
fn quantise(vars: &mut Vec<Var>) {
    let mut scales = Vec::new();
    for var in vars.iter_mut() {
        let quantisable = var.name.ends_with("/weight")
            && var.shape.len() == 2
            && (var.name.contains("/linear_") || var.name.contains("/embeddings/"));
        let Data::F32(values) = &var.data else {
            continue;
        };
        if !quantisable {
            continue;
        }
        let cols = var.shape[1];
        let mut q = Vec::with_capacity(values.len());
        let mut row_scales = Vec::new();
        for row in values.chunks(cols) {
            let amax = row.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            let scale = if amax == 0.0 { 1.0 } else { 127.0 / amax };
            q.extend(row.iter().map(|v| (v * scale).round() as i8));
            row_scales.push(scale);
        }
        scales.push(Var {
            name: format!("{}_scale", var.name),
            shape: vec![var.shape[0]],
            data: Data::F32(row_scales),
        });
        var.data = Data::I8(q);
    }
    vars.extend(scales);
}

/// Serialises `vars` as a version-6 `model.bin` with the one alias tiny.en has.
pub fn encode(vars: &[Var]) -> Vec<u8> {
    let mut out = Vec::new();
    let put_str = |out: &mut Vec<u8>, s: &str| {
        out.extend_from_slice(&(s.len() as u16 + 1).to_le_bytes());
        out.extend_from_slice(s.as_bytes());
        out.push(0);
    };
    out.extend_from_slice(&6u32.to_le_bytes());
    put_str(&mut out, "WhisperSpec");
    out.extend_from_slice(&3u32.to_le_bytes());
    out.extend_from_slice(&(vars.len() as u32).to_le_bytes());
    for var in vars {
        put_str(&mut out, &var.name);
        out.push(var.shape.len() as u8);
        for d in &var.shape {
            out.extend_from_slice(&(*d as u32).to_le_bytes());
        }
        let (code, bytes): (u8, Vec<u8>) = match &var.data {
            Data::F32(v) => (0, v.iter().flat_map(|x| x.to_le_bytes()).collect()),
            Data::I8(v) => (1, v.iter().map(|x| *x as u8).collect()),
            Data::I16(v) => (2, v.to_le_bytes().to_vec()),
        };
        out.push(code);
        out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        out.extend_from_slice(&bytes);
    }
    out.extend_from_slice(&1u32.to_le_bytes());
    put_str(&mut out, "decoder/projection/weight");
    put_str(&mut out, "decoder/embeddings/weight");
    out
}

/// Writes `model.bin`, `config.json` and `vocabulary.txt` into `dir`.
pub fn write_dir(dir: &Path, vars: &[Var]) {
    std::fs::write(dir.join("model.bin"), encode(vars)).expect("write model.bin");
    std::fs::write(
        dir.join("config.json"),
        r#"{"lang_ids": [], "suppress_ids": []}"#,
    )
    .expect("write config.json");
    std::fs::write(dir.join("vocabulary.txt"), VOCABULARY).expect("write vocabulary.txt");
}

/// The f32 values of the variable called `name`.
pub fn f32_values<'a>(vars: &'a [Var], name: &str) -> &'a [f32] {
    match vars.iter().find(|v| v.name == name).map(|v| &v.data) {
        Some(Data::F32(v)) => v,
        other => panic!("{name} is not an f32 variable: {other:?}"),
    }
}
