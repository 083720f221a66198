#include "platform/mapped_file.h"

#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "platform/aligned_alloc.h"
#include "platform/checked_math.h"

namespace kestrel {

namespace {

// Closes the descriptor on every return path.
struct Fd {
  int fd = -1;
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
};

Status errno_status(const char* what, const std::string& path, int err) {
  return Status::io_error("%s '%s': %s", what, path.c_str(), std::strerror(err));
}

// read() the whole file; short reads and EINTR are retried, a file that
// shrinks under us is an error rather than a silently short buffer.
Status read_all(int fd, uint8_t* dst, size_t size, const std::string& path) {
  size_t done = 0;
  while (done < size) {
    size_t chunk = size - done;
    if (chunk > (size_t{1} << 30)) chunk = size_t{1} << 30;
    ssize_t n = ::pread(fd, dst + done, chunk, static_cast<off_t>(done));
    if (n < 0) {
      if (errno == EINTR) continue;
      return errno_status("cannot read", path, errno);
    }
    if (n == 0)
      return Status::io_error("'%s' ended at byte %zu while reading %zu bytes (file changed?)", path.c_str(), done,
                              size);
    done += static_cast<size_t>(n);
  }
  return {};
}

}  // namespace

MappedFile::~MappedFile() {
  if (!data_) return;
  if (mapped_)
    ::munmap(const_cast<uint8_t*>(data_), size_);
  else
    aligned_free(const_cast<uint8_t*>(data_));
}

Expected<std::unique_ptr<MappedFile>> MappedFile::open(const std::string& path, const MapOptions& options) {
  Fd fd;
  do {
    fd.fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  } while (fd.fd < 0 && errno == EINTR);
  if (fd.fd < 0) return errno_status("cannot open", path, errno);

  struct stat st {};
  if (::fstat(fd.fd, &st) != 0) return errno_status("cannot stat", path, errno);
  if (S_ISDIR(st.st_mode)) return Status::io_error("'%s' is a directory, not a file", path.c_str());
  if (!S_ISREG(st.st_mode)) return Status::io_error("'%s' is not a regular file", path.c_str());
  if (st.st_size <= 0) return Status::bad_file("'%s' is empty (0 bytes)", path.c_str());

  const uint64_t file_bytes = static_cast<uint64_t>(st.st_size);
  if (options.max_bytes != 0 && file_bytes > options.max_bytes)
    return Status::too_long("'%s' is %llu bytes, above the cap of %llu", path.c_str(),
                            static_cast<unsigned long long>(file_bytes),
                            static_cast<unsigned long long>(options.max_bytes));
  size_t size = 0;
  if (!checked_to_size(file_bytes, size))
    return Status::unsupported("'%s' is %llu bytes, more than this platform can address", path.c_str(),
                               static_cast<unsigned long long>(file_bytes));

  std::unique_ptr<MappedFile> f(new (std::nothrow) MappedFile());
  if (!f) return Status::out_of_memory("MappedFile");
  f->path_ = path;

  if (options.use_mmap) {
    void* p = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd.fd, 0);
    if (p != MAP_FAILED) {
      f->data_ = static_cast<const uint8_t*>(p);
      f->size_ = size;
      f->mapped_ = true;
      return f;
    }
    // Some file systems cannot be mapped; the read() path below still works.
  }

  // Weights read into memory are streamed once per token: on 2 MiB pages the decode loop
  // takes a TLB miss per 2 MiB instead of per 4 KiB, and the hardware prefetchers stop
  // less often at page ends. Transparent huge pages are usually enabled for madvise only,
  // so ask for them (before the pages are touched); where that fails, 4 KiB pages serve.
  constexpr size_t kHugePage = size_t{2} << 20;
  const bool huge = size >= kHugePage;
  auto* buf = static_cast<uint8_t*>(aligned_alloc_bytes(size, huge ? kHugePage : 64));
  if (!buf) return Status::out_of_memory("cannot allocate %zu bytes to read '%s'", size, path.c_str());
#if defined(MADV_HUGEPAGE)
  if (huge) (void)::madvise(buf, size - size % kHugePage, MADV_HUGEPAGE);
#endif
  Status s = read_all(fd.fd, buf, size, path);
  if (!s.ok()) {
    aligned_free(buf);
    return s;
  }
  f->data_ = buf;
  f->size_ = size;
  f->mapped_ = false;
  return f;
}

}  // namespace kestrel
