// A file that appears under its final name only when complete: bytes go to a
// temporary sibling, commit() fsyncs and renames it; destruction without commit()
// removes the temporary. Checkpoint writers use it so a crash never leaves a
// half-written file under the final name. Files that grow line by line (logs,
// journals) use AppendFile instead.
#pragma once

#include <cstddef>
#include <cstdio>
#include <functional>
#include <string>
#include <string_view>

namespace m3d::io {

class AtomicFile {
 public:
  explicit AtomicFile(std::string path);
  ~AtomicFile();
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;

  void write(const void* data, size_t size);
  void commit();

 private:
  std::string path_;
  std::string temp_path_;
  int fd_ = -1;
};

// A file that grows by whole lines (metrics.jsonl, a bench journal): opened for append,
// every line's write and flush checked (a full disk is an error, not a file with holes);
// sync() makes what was appended durable. Errors name the file and `what` it holds
// ("PATH: cannot append to the journal: No space left on device").
class AppendFile {
 public:
  AppendFile(std::string path, std::string what);
  ~AppendFile();
  AppendFile(const AppendFile&) = delete;
  AppendFile& operator=(const AppendFile&) = delete;

  void append_line(std::string_view line);  // adds the '\n'
  void sync();

 private:
  std::string path_;
  std::string what_;
  std::FILE* file_;
};

// Throws "PATH: cannot write: directory D does not exist" when PATH's folder is missing: a
// command writing several files checks them all before writing the first.
void require_directory_of(const std::string& path);

// A whole file (text or bytes) written atomically; every error names the file and the
// OS reason, and nothing is left under the final name unless all of it was written.
void write_file_atomic(const std::string& path, std::string_view bytes);

// For writers that take a path (ITK): `write` writes the temporary sibling it is given
// (same file name behind a hidden prefix, so the extension still selects the format),
// `check` may verify it (e.g. read it back), then it is fsynced and renamed into place.
// On any error the temporary is removed and the final name is untouched.
void write_via_temp(const std::string& path, const std::function<void(const std::string& temp)>& write,
                    const std::function<void(const std::string& temp)>& check = {});

}  // namespace m3d::io
