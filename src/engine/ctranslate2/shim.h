/* A C interface over CTranslate2's Whisper replica, so Rust can call it
 * without C++ bindings. One model holds the weights; each decode worker owns
 * one replica over them and calls it from its own thread only. Every call
 * that can fail returns 0 on success, or non-zero with a message in *err
 * (free it with stt_ct2_string_free). No C++ exception crosses this line. */
#ifndef STT_CT2_SHIM_H
#define STT_CT2_SHIM_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct stt_ct2_model stt_ct2_model;
typedef struct stt_ct2_replica stt_ct2_replica;
typedef struct stt_ct2_encoded stt_ct2_encoded;

typedef struct {
  size_t n_mels;
  size_t num_languages;
  int multilingual;
} stt_ct2_info;

typedef struct {
  size_t beam_size;
  float patience;
  float length_penalty;
  float repetition_penalty;
  size_t no_repeat_ngram_size;
  size_t max_length;
  /* 1 = greedy; 0 = sample from the whole distribution */
  size_t sampling_topk;
  float sampling_temperature;
  size_t max_initial_timestamp_index;
  int suppress_blank;
} stt_ct2_options;

typedef struct {
  size_t *ids;
  size_t n_ids;
  /* cumulative log probability, normalised by length as CTranslate2 does */
  float score;
  float no_speech_prob;
} stt_ct2_result;

typedef struct {
  /* language token, e.g. "<|de|>", NUL-terminated */
  char token[16];
  float probability;
} stt_ct2_language;

void stt_ct2_string_free(char *s);

/* compute_type: "default", "int8", "int8_float32", "float32", ... */
int stt_ct2_model_load(const char *dir, const char *compute_type, stt_ct2_model **out,
                       char **err);
void stt_ct2_model_free(stt_ct2_model *model);
int stt_ct2_model_info(const stt_ct2_model *model, stt_ct2_info *out, char **err);
/* The compute type the weights were actually loaded with. */
int stt_ct2_model_compute_type(const stt_ct2_model *model, char *out, size_t cap);

/* A replica with `threads` compute threads, run on a thread of its own. */
int stt_ct2_replica_new(const stt_ct2_model *model, size_t threads, stt_ct2_replica **out,
                        char **err);
void stt_ct2_replica_free(stt_ct2_replica *replica);

/* mel: batch × n_mels × n_frames floats, row-major. */
int stt_ct2_encode(stt_ct2_replica *replica, const float *mel, size_t batch, size_t n_mels,
                   size_t n_frames, stt_ct2_encoded **out, char **err);
void stt_ct2_encoded_free(stt_ct2_encoded *encoded);

/* Languages of batch item 0, most probable first; writes at most cap. */
int stt_ct2_detect_language(stt_ct2_replica *replica, const stt_ct2_encoded *encoded,
                            stt_ct2_language *out, size_t cap, size_t *n_out, char **err);

/* prompts: batch × prompt_len token ids; results: batch entries, each freed
 * with stt_ct2_results_free. */
int stt_ct2_generate(stt_ct2_replica *replica, const stt_ct2_encoded *encoded,
                     const size_t *prompts, size_t prompt_len, const stt_ct2_options *options,
                     stt_ct2_result *results, char **err);
void stt_ct2_results_free(stt_ct2_result *results, size_t batch);

typedef struct {
  /* encoder position (0.02 s each, window-relative) where each text token
   * starts, then where the last one ends: n_tokens + 1 entries */
  long long *starts;
  size_t n_starts;
  /* probability of each text token */
  float *probs;
  size_t n_probs;
} stt_ct2_alignment;

/* Word-level timing: aligns each row's text tokens to the encoder output
 * through the model's alignment heads (cross-attention and DTW).
 * start_sequence: <|startoftranscript|> and, on multilingual models, the
 * language and task (no prompt, no <|notimestamps|>); tokens: every row's
 * text tokens one after another, counts[b] of them for row b; num_frames:
 * mel frames of real audio per row. out: one entry per row, freed with
 * stt_ct2_alignments_free. */
int stt_ct2_align(stt_ct2_replica *replica, const stt_ct2_encoded *encoded,
                  const size_t *start_sequence, size_t start_len, const size_t *tokens,
                  const size_t *counts, const size_t *num_frames, size_t median_filter_width,
                  stt_ct2_alignment *out, char **err);
void stt_ct2_alignments_free(stt_ct2_alignment *out, size_t batch);

#ifdef __cplusplus
}
#endif

#endif
