// CTranslate2's Whisper behind the C interface of shim.h. Built against the
// headers of the exact CTranslate2 release whose library we link (a C++ ABI
// is only stable within one release), see build.rs.

#include "shim.h"

#include <cstdlib>
#include <cstring>
#include <exception>
#include <memory>
#include <string>
#include <vector>

#include "ctranslate2/models/whisper.h"
#include "ctranslate2/types.h"
#include "ctranslate2/utils.h"

using ctranslate2::StorageView;
using ctranslate2::models::WhisperReplica;

struct stt_ct2_model {
  std::shared_ptr<const ctranslate2::models::Model> model;
};

// A pool of one replica: CTranslate2 runs it on a thread of its own that it
// set up (thread count, allocator), and our worker waits on the futures. A
// bare replica driven from our own thread ran its kernels with far less
// parallel speed-up (2 threads: 0.65 s against 0.44 s per tiny.en decode).
struct stt_ct2_replica {
  std::unique_ptr<ctranslate2::models::Whisper> pool;
};

struct stt_ct2_encoded {
  StorageView view;
};

namespace {

char *copy_string(const std::string &s) {
  char *out = static_cast<char *>(std::malloc(s.size() + 1));
  if (out) {
    std::memcpy(out, s.c_str(), s.size() + 1);
  }
  return out;
}

// Runs `body`, turning any exception into a message for the caller.
template <typename F> int guarded(char **err, F &&body) {
  try {
    body();
    return 0;
  } catch (const std::exception &e) {
    if (err) *err = copy_string(e.what());
  } catch (...) {
    if (err) *err = copy_string("unknown CTranslate2 error");
  }
  return 1;
}

}  // namespace

extern "C" {

void stt_ct2_string_free(char *s) { std::free(s); }

int stt_ct2_model_load(const char *dir, const char *compute_type, stt_ct2_model **out,
                       char **err) {
  return guarded(err, [&] {
    auto ct = ctranslate2::str_to_compute_type(compute_type);
    auto model = ctranslate2::models::Model::load(dir, ctranslate2::Device::CPU, 0, ct);
    if (!dynamic_cast<const ctranslate2::models::WhisperModel *>(model.get()))
      throw std::invalid_argument("the model in " + std::string(dir) + " is not a Whisper model");
    *out = new stt_ct2_model{std::move(model)};
  });
}

void stt_ct2_model_free(stt_ct2_model *model) { delete model; }

int stt_ct2_model_compute_type(const stt_ct2_model *model, char *out, size_t cap) {
  if (cap == 0) return 1;
  out[0] = '\0';
  return guarded(nullptr, [&] {
    std::string s = ctranslate2::compute_type_to_str(model->model->effective_compute_type());
    std::strncpy(out, s.c_str(), cap - 1);
    out[cap - 1] = '\0';
  });
}

int stt_ct2_model_info(const stt_ct2_model *model, stt_ct2_info *out, char **err) {
  return guarded(err, [&] {
    auto replica = WhisperReplica::create_from_model(*model->model);
    out->n_mels = replica->n_mels();
    out->num_languages = replica->num_languages();
    out->multilingual = replica->is_multilingual() ? 1 : 0;
  });
}

int stt_ct2_replica_new(const stt_ct2_model *model, size_t threads, stt_ct2_replica **out,
                        char **err) {
  return guarded(err, [&] {
    ctranslate2::ReplicaPoolConfig config;
    config.num_threads_per_replica = threads;
    *out = new stt_ct2_replica{
        std::make_unique<ctranslate2::models::Whisper>(model->model, config)};
  });
}

void stt_ct2_replica_free(stt_ct2_replica *replica) { delete replica; }

int stt_ct2_encode(stt_ct2_replica *replica, const float *mel, size_t batch, size_t n_mels,
                   size_t n_frames, stt_ct2_encoded **out, char **err) {
  return guarded(err, [&] {
    // A view of the caller's buffer: Whisper::encode copies it for the
    // pool's thread, so copying here first would copy twice.
    StorageView features({static_cast<ctranslate2::dim_t>(batch),
                          static_cast<ctranslate2::dim_t>(n_mels),
                          static_cast<ctranslate2::dim_t>(n_frames)},
                         const_cast<float *>(mel));
    StorageView encoded = replica->pool->encode(features, /*to_cpu=*/false).get();
    *out = new stt_ct2_encoded{std::move(encoded)};
  });
}

void stt_ct2_encoded_free(stt_ct2_encoded *encoded) { delete encoded; }

int stt_ct2_detect_language(stt_ct2_replica *replica, const stt_ct2_encoded *encoded,
                            stt_ct2_language *out, size_t cap, size_t *n_out, char **err) {
  return guarded(err, [&] {
    // The replica takes its input by value; an encoder output is recognised
    // as such and not encoded again.
    auto futures = replica->pool->detect_language(encoded->view);
    size_t n = 0;
    if (!futures.empty()) {
      auto langs = futures[0].get();
      for (const auto &[token, prob] : langs) {
        if (n == cap) break;
        std::strncpy(out[n].token, token.c_str(), sizeof(out[n].token) - 1);
        out[n].token[sizeof(out[n].token) - 1] = '\0';
        out[n].probability = prob;
        ++n;
      }
    }
    *n_out = n;
  });
}

int stt_ct2_generate(stt_ct2_replica *replica, const stt_ct2_encoded *encoded,
                     const size_t *prompts, size_t prompt_len, const stt_ct2_options *o,
                     stt_ct2_result *results, char **err) {
  size_t batch = 0;
  return guarded(err, [&] {
    batch = static_cast<size_t>(encoded->view.dim(0));
    std::vector<std::vector<size_t>> prompt_ids;
    for (size_t b = 0; b < batch; ++b)
      prompt_ids.emplace_back(prompts + b * prompt_len, prompts + (b + 1) * prompt_len);
    ctranslate2::models::WhisperOptions options;
    options.beam_size = o->beam_size;
    options.patience = o->patience;
    options.length_penalty = o->length_penalty;
    options.repetition_penalty = o->repetition_penalty;
    options.no_repeat_ngram_size = o->no_repeat_ngram_size;
    options.max_length = o->max_length;
    options.sampling_topk = o->sampling_topk;
    options.sampling_temperature = o->sampling_temperature;
    options.max_initial_timestamp_index = o->max_initial_timestamp_index;
    options.suppress_blank = o->suppress_blank != 0;
    options.num_hypotheses = 1;
    options.return_scores = true;
    options.return_no_speech_prob = true;
    auto futures = replica->pool->generate(encoded->view, prompt_ids, options);
    for (size_t b = 0; b < batch; ++b) {
      results[b] = stt_ct2_result{nullptr, 0, 0.0f, 0.0f};
    }
    for (size_t b = 0; b < batch && b < futures.size(); ++b) {
      const auto r = futures[b].get();
      stt_ct2_result &dst = results[b];
      if (!r.sequences_ids.empty()) {
        const auto &ids = r.sequences_ids[0];
        dst.ids = static_cast<size_t *>(std::malloc(sizeof(size_t) * (ids.size() + 1)));
        if (!dst.ids) throw std::bad_alloc();
        std::copy(ids.begin(), ids.end(), dst.ids);
        dst.n_ids = ids.size();
      }
      dst.score = r.scores.empty() ? 0.0f : r.scores[0];
      dst.no_speech_prob = r.no_speech_prob;
    }
  });
}

void stt_ct2_results_free(stt_ct2_result *results, size_t batch) {
  for (size_t b = 0; b < batch; ++b) {
    std::free(results[b].ids);
    results[b].ids = nullptr;
    results[b].n_ids = 0;
  }
}

int stt_ct2_align(stt_ct2_replica *replica, const stt_ct2_encoded *encoded,
                  const size_t *start_sequence, size_t start_len, const size_t *tokens,
                  const size_t *counts, const size_t *num_frames, size_t median_filter_width,
                  stt_ct2_alignment *out, char **err) {
  size_t batch = 0;
  return guarded(err, [&] {
    batch = static_cast<size_t>(encoded->view.dim(0));
    for (size_t b = 0; b < batch; ++b) out[b] = stt_ct2_alignment{nullptr, 0, nullptr, 0};
    std::vector<size_t> start(start_sequence, start_sequence + start_len);
    std::vector<std::vector<size_t>> text;
    std::vector<size_t> frames(num_frames, num_frames + batch);
    size_t at = 0;
    for (size_t b = 0; b < batch; ++b) {
      text.emplace_back(tokens + at, tokens + at + counts[b]);
      at += counts[b];
    }
    auto futures = replica->pool->align(encoded->view, start, text, frames,
                                        static_cast<ctranslate2::dim_t>(median_filter_width));
    for (size_t b = 0; b < batch && b < futures.size(); ++b) {
      const auto r = futures[b].get();
      stt_ct2_alignment &dst = out[b];
      // The DTW path visits every text row in order; the first time index
      // of each row is where that token starts.
      std::vector<long long> starts;
      long long last_row = -1;
      for (const auto &step : r.alignments) {
        if (step.first >= 0 && step.first != last_row) {
          starts.push_back(static_cast<long long>(step.second));
          last_row = step.first;
        }
      }
      if (!starts.empty()) {
        dst.starts = static_cast<long long *>(std::malloc(sizeof(long long) * starts.size()));
        if (!dst.starts) throw std::bad_alloc();
        std::copy(starts.begin(), starts.end(), dst.starts);
        dst.n_starts = starts.size();
      }
      if (!r.text_token_probs.empty()) {
        dst.probs = static_cast<float *>(std::malloc(sizeof(float) * r.text_token_probs.size()));
        if (!dst.probs) throw std::bad_alloc();
        std::copy(r.text_token_probs.begin(), r.text_token_probs.end(), dst.probs);
        dst.n_probs = r.text_token_probs.size();
      }
    }
  });
}

void stt_ct2_alignments_free(stt_ct2_alignment *out, size_t batch) {
  for (size_t b = 0; b < batch; ++b) {
    std::free(out[b].starts);
    std::free(out[b].probs);
    out[b] = stt_ct2_alignment{nullptr, 0, nullptr, 0};
  }
}

}  // extern "C"
