#include "io/mapped_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "m3d/error.h"

namespace m3d::io {

std::shared_ptr<const MappedFile> MappedFile::open(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail("{}: cannot open: {}", path, std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    int err = errno;
    ::close(fd);
    fail("{}: cannot stat: {}", path, std::strerror(err));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    fail("{}: not a regular file", path);
  }
  std::shared_ptr<MappedFile> file(new MappedFile());
  file->path_ = path;
  file->size_ = static_cast<size_t>(st.st_size);
  if (file->size_ > 0) {
    void* ptr = ::mmap(nullptr, file->size_, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
    if (ptr == MAP_FAILED) {
      int err = errno;
      ::close(fd);
      fail("{}: cannot map {} bytes: {}", path, file->size_, std::strerror(err));
    }
    file->data_ = static_cast<const uint8_t*>(ptr);
    file->mapped_ = true;
  }
  ::close(fd);  // the mapping stays valid after close
  return file;
}

std::shared_ptr<const MappedFile> MappedFile::from_bytes(const std::string& name, const uint8_t* data, size_t size) {
  std::shared_ptr<MappedFile> file(new MappedFile());
  file->path_ = name;
  file->size_ = size;
  // Over-aligned so zero-copy paths behave as they do on a page-aligned mapping.
  size_t rounded = (size / 64 + 1) * 64;
  file->owned_.reset(static_cast<uint8_t*>(std::aligned_alloc(64, rounded)));
  if (!file->owned_) fail("{}: cannot allocate {} bytes", name, size);
  if (size > 0) std::memcpy(file->owned_.get(), data, size);
  file->data_ = file->owned_.get();
  return file;
}

void MappedFile::release(const uint8_t* ptr, size_t size) const {
  if (!mapped_ || ptr < data_ || ptr + size > data_ + size_) return;
  const auto page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
  const uintptr_t begin = (reinterpret_cast<uintptr_t>(ptr) + page - 1) / page * page;
  const uintptr_t end = (reinterpret_cast<uintptr_t>(ptr) + size) / page * page;
  if (end > begin) ::madvise(reinterpret_cast<void*>(begin), end - begin, MADV_DONTNEED);
}

MappedFile::~MappedFile() {
  if (mapped_) ::munmap(const_cast<uint8_t*>(data_), size_);
}

}  // namespace m3d::io
