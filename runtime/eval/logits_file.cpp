#include "runtime/eval/logits_file.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <system_error>

#include "platform/checked_math.h"

namespace kestrel::eval {

namespace {

constexpr char kMagic[8] = {'_', 'l', 'o', 'g', 'i', 't', 's', '_'};
constexpr uint64_t kHeaderBytes = 8 + 3 * 4;

// Bytes the whole file must have for this header, or 0 on overflow.
uint64_t expected_size(int32_t n_ctx, int32_t n_vocab, int32_t n_chunk) {
  uint64_t tokens = 0, rows = 0, row_bytes = 0, data = 0, a = 0, b = 0;
  if (!checked_mul(static_cast<uint64_t>(n_ctx), static_cast<uint64_t>(n_chunk), tokens)) return 0;
  if (!checked_mul(tokens, 4, a)) return 0;
  if (!checked_mul(static_cast<uint64_t>(logprob_rows_per_chunk(n_ctx)), static_cast<uint64_t>(n_chunk), rows)) return 0;
  if (!checked_mul(static_cast<uint64_t>(logprob_row_u16(n_vocab)), 2, row_bytes)) return 0;
  if (!checked_mul(rows, row_bytes, data)) return 0;
  if (!checked_add(kHeaderBytes, a, b) || !checked_add(b, data, a)) return 0;
  return a;
}

Status read_exact(std::FILE* f, void* dst, size_t n, const std::string& path, const char* what) {
  if (std::fread(dst, 1, n, f) != n)
    return Status::bad_file("logits file '%s': truncated while reading %s", path.c_str(), what);
  return {};
}

Expected<LogitsHeader> read_header(std::FILE* f, const std::string& path, uint64_t file_size) {
  if (file_size < kHeaderBytes)
    return Status::bad_file("logits file '%s': %llu bytes, too short for a header", path.c_str(),
                            static_cast<unsigned long long>(file_size));
  char magic[8];
  KESTREL_TRY(read_exact(f, magic, 8, path, "the magic"));
  if (std::memcmp(magic, kMagic, 8) != 0)
    return Status::bad_file("'%s' is not a logits file (no \"_logits_\" magic)", path.c_str());
  int32_t v[3];
  KESTREL_TRY(read_exact(f, v, sizeof v, path, "the header"));
  LogitsHeader h;
  h.n_ctx = v[0];
  h.n_vocab = v[1];
  h.n_chunk = v[2];
  if (h.n_ctx < 2 || h.n_ctx > kMaxLogitsCtx)
    return Status::bad_file("logits file '%s': n_ctx %d outside [2, %d]", path.c_str(), h.n_ctx, kMaxLogitsCtx);
  if (h.n_vocab < 1 || h.n_vocab > kMaxLogitsVocab)
    return Status::bad_file("logits file '%s': n_vocab %d outside [1, %d]", path.c_str(), h.n_vocab, kMaxLogitsVocab);
  if (h.n_chunk < 1) return Status::bad_file("logits file '%s': n_chunk %d < 1", path.c_str(), h.n_chunk);
  return h;
}

// 64-bit on every host (ftell's long is 32 bits on armhf); 0 when unknown.
uint64_t size_of(const std::string& path) {
  std::error_code ec;
  const std::uintmax_t n = std::filesystem::file_size(path, ec);
  return ec ? 0 : static_cast<uint64_t>(n);
}

}  // namespace

double encode_logprob_row(const float* logits, int32_t n_vocab, int32_t target, uint16_t* out) {
  // The arithmetic follows llama-perplexity's (floats, the sum in double), so
  // that files from either program hold the same codes for the same logits.
  float max_logit = logits[0], min_logit = logits[0];
  for (int32_t i = 1; i < n_vocab; ++i) {
    max_logit = std::max(max_logit, logits[i]);
    min_logit = std::min(min_logit, logits[i]);
  }
  min_logit = std::max(min_logit, max_logit - 16);
  double sum_exp = 0.0;
  for (int32_t i = 0; i < n_vocab; ++i) sum_exp += std::exp(logits[i] - max_logit);
  const float log_sum_exp = static_cast<float>(std::log(sum_exp));
  const float min_log_prob = min_logit - max_logit - log_sum_exp;
  const float scale = (max_logit - min_logit) / 65535.f;
  std::memcpy(out, &scale, 4);
  std::memcpy(out + 2, &min_log_prob, 4);
  uint16_t* q = out + 4;
  if (scale != 0.0f) {
    const float inv_scale = 1 / scale;
    for (int32_t i = 0; i < n_vocab; ++i)
      q[i] = logits[i] > min_logit ? static_cast<uint16_t>(std::lrint(inv_scale * (logits[i] - min_logit))) : 0;
  } else {
    std::fill(q, q + n_vocab, uint16_t{0});
  }
  if (n_vocab % 2 != 0) q[n_vocab] = 0;
  return static_cast<double>(max_logit) + log_sum_exp - logits[target];
}

LogitsWriter::~LogitsWriter() {
  if (f_) {
    std::fclose(f_);
    std::remove(tmp_.c_str());
  }
}

Expected<std::unique_ptr<LogitsWriter>> LogitsWriter::create(const std::string& path, const LogitsHeader& h) {
  if (h.n_ctx < 2 || h.n_ctx > kMaxLogitsCtx || h.n_vocab < 1 || h.n_vocab > kMaxLogitsVocab || h.n_chunk < 1 ||
      h.tokens.size() != static_cast<size_t>(h.n_ctx) * static_cast<size_t>(h.n_chunk))
    return Status::invalid_argument("logits file: inconsistent header (n_ctx %d, n_vocab %d, n_chunk %d, %zu tokens)",
                                    h.n_ctx, h.n_vocab, h.n_chunk, h.tokens.size());
  std::unique_ptr<LogitsWriter> w(new LogitsWriter());
  w->path_ = path;
  w->tmp_ = path + ".tmp";
  w->f_ = std::fopen(w->tmp_.c_str(), "wb");
  if (!w->f_) return Status::io_error("cannot create '%s': %s", w->tmp_.c_str(), std::strerror(errno));
  w->row_u16_ = logprob_row_u16(h.n_vocab);
  w->rows_left_ = static_cast<int64_t>(logprob_rows_per_chunk(h.n_ctx)) * h.n_chunk;
  const int32_t v[3] = {h.n_ctx, h.n_vocab, h.n_chunk};
  bool ok = std::fwrite(kMagic, 1, 8, w->f_) == 8 && std::fwrite(v, 4, 3, w->f_) == 3;
  ok = ok && std::fwrite(h.tokens.data(), 4, h.tokens.size(), w->f_) == h.tokens.size();
  if (!ok) return Status::io_error("cannot write '%s': %s", w->tmp_.c_str(), std::strerror(errno));
  return w;
}

Status LogitsWriter::write_rows(const uint16_t* rows, int64_t n_rows) {
  if (!f_) return Status::invalid_argument("logits file: already finished");
  if (n_rows < 0 || n_rows > rows_left_)
    return Status::invalid_argument("logits file: %lld rows written past the header's %lld",
                                    static_cast<long long>(n_rows), static_cast<long long>(rows_left_));
  const size_t n = static_cast<size_t>(n_rows * row_u16_);
  if (std::fwrite(rows, 2, n, f_) != n) return Status::io_error("cannot write '%s': %s", tmp_.c_str(), std::strerror(errno));
  rows_left_ -= n_rows;
  return {};
}

Status LogitsWriter::finish() {
  if (!f_) return Status::invalid_argument("logits file: already finished");
  if (rows_left_ != 0)
    return Status::invalid_argument("logits file '%s': %lld rows still missing", path_.c_str(),
                                    static_cast<long long>(rows_left_));
  const bool ok = std::fclose(f_) == 0;
  f_ = nullptr;
  if (!ok) {
    std::remove(tmp_.c_str());
    return Status::io_error("cannot write '%s': %s", tmp_.c_str(), std::strerror(errno));
  }
  if (std::rename(tmp_.c_str(), path_.c_str()) != 0)
    return Status::io_error("cannot rename '%s' to '%s': %s", tmp_.c_str(), path_.c_str(), std::strerror(errno));
  return {};
}

LogitsReader::~LogitsReader() {
  if (f_) std::fclose(f_);
}

Expected<LogitsHeader> LogitsReader::peek(const std::string& path) {
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) return Status::io_error("cannot open logits file '%s': %s", path.c_str(), std::strerror(errno));
  Expected<LogitsHeader> h = read_header(f, path, size_of(path));
  std::fclose(f);
  return h;
}

Expected<std::unique_ptr<LogitsReader>> LogitsReader::open(const std::string& path, int32_t model_n_vocab) {
  std::unique_ptr<LogitsReader> r(new LogitsReader());
  r->path_ = path;
  r->f_ = std::fopen(path.c_str(), "rb");
  if (!r->f_) return Status::io_error("cannot open logits file '%s': %s", path.c_str(), std::strerror(errno));
  const uint64_t file_size = size_of(path);
  KESTREL_TRY_ASSIGN(r->header_, read_header(r->f_, path, file_size));
  LogitsHeader& h = r->header_;
  if (h.n_vocab != model_n_vocab)
    return Status::bad_file("logits file '%s' was written for a vocabulary of %d tokens; this model has %d",
                            path.c_str(), h.n_vocab, model_n_vocab);
  const uint64_t want = expected_size(h.n_ctx, h.n_vocab, h.n_chunk);
  if (want == 0 || want != file_size)
    return Status::bad_file("logits file '%s' has %llu bytes; n_ctx %d, n_vocab %d and %d chunks need %llu%s",
                            path.c_str(), static_cast<unsigned long long>(file_size), h.n_ctx, h.n_vocab, h.n_chunk,
                            static_cast<unsigned long long>(want), file_size < want ? " (truncated)" : "");
  try {
    h.tokens.resize(static_cast<size_t>(h.n_ctx) * static_cast<size_t>(h.n_chunk));
  } catch (const std::bad_alloc&) {
    return Status::out_of_memory("logits file '%s': token list", path.c_str());
  }
  KESTREL_TRY(read_exact(r->f_, h.tokens.data(), h.tokens.size() * 4, path, "the token list"));
  for (size_t i = 0; i < h.tokens.size(); ++i)
    if (h.tokens[i] < 0 || h.tokens[i] >= h.n_vocab)
      return Status::bad_file("logits file '%s': token %zu is %d, outside the vocabulary of %d", path.c_str(), i,
                              h.tokens[i], h.n_vocab);
  return r;
}

Status LogitsReader::read_chunk(std::vector<uint16_t>& rows) {
  const LogitsHeader& h = header_;
  if (chunks_read_ >= h.n_chunk)
    return Status::invalid_argument("logits file '%s': all %d chunks were read", path_.c_str(), h.n_chunk);
  const int64_t row_u16 = logprob_row_u16(h.n_vocab);
  const int32_t n_rows = logprob_rows_per_chunk(h.n_ctx);
  rows.resize(static_cast<size_t>(n_rows * row_u16));
  KESTREL_TRY(read_exact(f_, rows.data(), rows.size() * 2, path_, "log-probabilities"));
  for (int32_t i = 0; i < n_rows; ++i) {
    float scale, floor;
    std::memcpy(&scale, rows.data() + i * row_u16, 4);
    std::memcpy(&floor, rows.data() + i * row_u16 + 2, 4);
    // A stored row spans at most 16 nats above a floor that is a log-probability.
    if (!std::isfinite(scale) || scale < 0.0f || scale > 16.0f / 65535.0f * 1.001f || !std::isfinite(floor) ||
        floor > 1e-3f || floor < -1e6f)
      return Status::bad_file("logits file '%s': chunk %d row %d has scale %g and floor %g, not a stored row",
                              path_.c_str(), chunks_read_, i, static_cast<double>(scale), static_cast<double>(floor));
  }
  ++chunks_read_;
  return {};
}

}  // namespace kestrel::eval
