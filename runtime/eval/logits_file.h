// llama.cpp's logits file (llama-perplexity --kl-divergence-base), read and
// written byte for byte, so that kestrel can be compared with llama.cpp in both
// directions. Little-endian hosts only, as llama.cpp writes it:
//
//   char    magic[8]     "_logits_"
//   int32   n_ctx        tokens per chunk
//   int32   n_vocab
//   int32   n_chunk
//   int32   tokens[n_chunk * n_ctx]   the text's tokens (as tokenized, BOS not substituted)
//   per chunk, n_ctx - 1 - n_ctx/2 rows (the scored positions), each of
//   logprob_row_u16(n_vocab) uint16:
//     float  scale, min_log_prob      (4 uint16)
//     uint16 q[n_vocab]               log p_i ~= scale * q[i] + min_log_prob
//     uint16 pad                      (when n_vocab is odd; 0)
//   min_log_prob is the row's log-probability floor: max(min logit, max logit - 16)
//   less the log-sum-exp; q = round((logit - floor) / scale), 0 at or below the floor.
//
// The file is untrusted input: the reader checks the magic, the header's
// values against caps and the model, the file's exact size, every token id and
// every row's scale and floor, and reports bad_file naming what is wrong.
//
//   KESTREL_TRY_ASSIGN(auto w, LogitsWriter::create("base.kld", header));
//   KESTREL_TRY(w->write_rows(rows.data(), n_rows));   // per chunk, in order
//   KESTREL_TRY(w->finish());
//   KESTREL_TRY_ASSIGN(auto r, LogitsReader::open("base.kld", n_vocab));
//   KESTREL_TRY(r->read_chunk(rows));                  // n_ctx - 1 - n_ctx/2 rows
#pragma once

#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "platform/status.h"

namespace kestrel::eval {

// uint16 per stored row: n_vocab rounded up to even, plus the two floats.
inline int64_t logprob_row_u16(int32_t n_vocab) { return 2 * ((static_cast<int64_t>(n_vocab) + 1) / 2) + 4; }
// Rows stored per chunk.
inline int32_t logprob_rows_per_chunk(int32_t n_ctx) { return n_ctx - 1 - n_ctx / 2; }

// Caps on header values, checked before anything is allocated from them.
inline constexpr int32_t kMaxLogitsCtx = 1 << 20;
inline constexpr int32_t kMaxLogitsVocab = 1 << 22;

struct LogitsHeader {
  int32_t n_ctx = 0;
  int32_t n_vocab = 0;
  int32_t n_chunk = 0;
  std::vector<int32_t> tokens;  // [n_chunk * n_ctx]
};

// Stores one row of logits [n_vocab] as llama.cpp does into out
// [logprob_row_u16(n_vocab)]; returns the row's nll of target.
double encode_logprob_row(const float* logits, int32_t n_vocab, int32_t target, uint16_t* out);

class LogitsWriter {
 public:
  ~LogitsWriter();
  // Writes to path + ".tmp", renamed over path by finish(). The header's
  // tokens must hold n_chunk * n_ctx ids.
  static Expected<std::unique_ptr<LogitsWriter>> create(const std::string& path, const LogitsHeader& header);
  // n_rows rows of logprob_row_u16(n_vocab) uint16 each.
  Status write_rows(const uint16_t* rows, int64_t n_rows);
  // Checks that every chunk's rows were written, closes and renames.
  Status finish();

 private:
  LogitsWriter() = default;
  std::FILE* f_ = nullptr;
  std::string path_, tmp_;
  int64_t rows_left_ = 0;
  int64_t row_u16_ = 0;
};

class LogitsReader {
 public:
  ~LogitsReader();
  // Opens and validates the header (n_vocab must equal the model's), the
  // exact file size and the token ids.
  static Expected<std::unique_ptr<LogitsReader>> open(const std::string& path, int32_t model_n_vocab);
  // Reads only the header's n_ctx, n_vocab and n_chunk (to size a context
  // before open); tokens stays empty.
  static Expected<LogitsHeader> peek(const std::string& path);
  const LogitsHeader& header() const { return header_; }
  // The next chunk's rows [logprob_rows_per_chunk(n_ctx) * logprob_row_u16(n_vocab)];
  // bad_file when a row's scale or floor is not a finite, sane value.
  Status read_chunk(std::vector<uint16_t>& rows);

 private:
  LogitsReader() = default;
  std::FILE* f_ = nullptr;
  std::string path_;
  LogitsHeader header_;
  int32_t chunks_read_ = 0;
};

}  // namespace kestrel::eval
