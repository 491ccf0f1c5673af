// Memory map of a whole file. Tensors created from a checkpoint keep a shared_ptr
// to it, so weights are paged in on use and never copied when aligned. The map is
// private copy-on-write: writing through a tensor view never reaches the file.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>

namespace m3d::io {

class MappedFile {
 public:
  // Throws m3d::Error naming the path when it cannot be opened or mapped.
  static std::shared_ptr<const MappedFile> open(const std::string& path);
  // Wraps bytes already in memory (tests and fuzz targets); the copy is owned.
  static std::shared_ptr<const MappedFile> from_bytes(const std::string& name, const uint8_t* data, size_t size);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  // Drops the pages lying wholly inside [ptr, ptr + size) from memory; a later
  // read faults them back in from the file. Used after a tensor has been copied
  // out, so loading a converted model does not also keep the file resident.
  void release(const uint8_t* ptr, size_t size) const;

  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  MappedFile() = default;
  std::string path_;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
  bool mapped_ = false;
  std::unique_ptr<uint8_t, void (*)(void*)> owned_{nullptr, std::free};
};

}  // namespace m3d::io
