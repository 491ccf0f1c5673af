// m3d serve's study store (serve_store.h).
#include "serve_store.h"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <functional>
#include <optional>
#include <random>

#include "core/strings.h"
#include "io/atomic_file.h"
#include "io/mapped_file.h"
#include "io/zip.h"
#include "m3d/error.h"

namespace m3d::cli {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

constexpr size_t kHeadBytes = 512;  // enough for a NIfTI-1 header's magic at byte 344
constexpr const char* kFormats = "supported: .nii, .nii.gz, .nrrd, .mha, .npy, and .zip of a DICOM series";

[[noreturn]] void server_fail(const std::string& what, int err) { throw std::runtime_error(fmt::format("{}: {}", what, std::strerror(err))); }

// The extension the volume readers know the upload by: the client's file name says,
// else its Content-Type, else its first bytes. A gzip stream is always .nii.gz (the
// one gzipped format the readers take).
std::string upload_extension(const std::string& filename, const std::string& content_type, const std::string& head) {
  const bool gzip = head.size() >= 2 && static_cast<uint8_t>(head[0]) == 0x1f && static_cast<uint8_t>(head[1]) == 0x8b;
  const std::string name = ascii_lower(filename);
  if (!name.empty()) {
    if (ends_with(name, ".nii") || ends_with(name, ".nii.gz")) return gzip ? ".nii.gz" : ".nii";
    for (const char* ext : {".nrrd", ".mha", ".npy", ".zip"}) {
      if (ends_with(name, ext)) return ext;
    }
    throw StudyRejected(400, fmt::format("{}: unsupported file type ({}; .nhdr/.mhd need their data file: send .nrrd/.mha)", filename, kFormats));
  }
  const std::string type = ascii_lower(content_type.substr(0, content_type.find(';')));
  if (type == "application/gzip" || type == "application/x-gzip" || gzip) return ".nii.gz";
  if (type == "application/x-npy" || type == "application/npy") return ".npy";
  if (type == "application/x-nifti" || type == "application/nifti") return ".nii";
  if (type == "application/x-nrrd" || type == "application/nrrd") return ".nrrd";
  if (type == "application/zip" || type == "application/x-zip-compressed" || head.rfind("PK\x03\x04", 0) == 0) return ".zip";
  if (head.rfind("\x93NUMPY", 0) == 0) return ".npy";
  if (head.rfind("NRRD", 0) == 0) return ".nrrd";
  if (head.rfind("ObjectType", 0) == 0 || head.rfind("NDims", 0) == 0) return ".mha";
  const bool nifti1 = head.size() >= 348 && head.compare(344, 4, std::string("n+1\0", 4)) == 0;
  const bool nifti2 = head.size() >= 8 && head.compare(4, 4, std::string("n+2\0", 4)) == 0;
  if (nifti1 || nifti2) return ".nii";
  throw StudyRejected(400, fmt::format("cannot tell the upload's format from its first bytes: name it with ?filename=scan.nii.gz ({})", kFormats));
}

std::string format_name(const std::string& ext) {
  if (ext == ".npy") return "npy";
  if (ext == ".nrrd") return "nrrd";
  if (ext == ".mha") return "metaimage";
  if (ext == ".zip") return "dicom";
  return "nifti";
}

// The client's name for its file, without any directory part (it is only shown).
std::string shown_name(const std::string& filename, const std::string& ext) {
  std::string name = filename.substr(filename.find_last_of("/\\") == std::string::npos ? 0 : filename.find_last_of("/\\") + 1);
  if (name.size() > 255) name.resize(255);
  return name.empty() ? "upload" + ext : name;
}

void replace_all(std::string& text, const std::string& from, const std::string& to) {
  for (size_t at = text.find(from); !from.empty() && at != std::string::npos; at = text.find(from, at + to.size())) text.replace(at, from.size(), to);
}

void fsync_dir(const std::string& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd >= 0) {
    ::fsync(fd);
    ::close(fd);
  }
}

// A zipped DICOM series unpacked into `dir`: every file entry under a name of the server's
// (000000, 000001, ...: the series reader reads one folder and skips what is not DICOM;
// entry names are only checked), each inflated with its length and CRC-32 checked. Before
// anything is inflated: an unsafe entry name is a 400, more files than `max_entries` or
// more recorded bytes than `max_bytes` (a decompression bomb) a 413; an entry inflating
// past its recorded size fails as it happens. Errors show the client's file name.
void unzip_series(const std::string& zip, const std::string& dir, const std::string& shown, const StoreOptions& options) {
  const auto rejected = [&](int status, std::string message) {
    replace_all(message, zip, shown);
    return StudyRejected(status, message);
  };
  try {
    const std::shared_ptr<const io::MappedFile> file = io::MappedFile::open(zip);
    std::vector<io::ZipEntry> files;
    for (io::ZipEntry& entry : io::zip_list(*file)) {
      if (const std::string problem = io::zip_name_problem(entry.name); !problem.empty()) {
        throw rejected(400, fmt::format("{}: entry '{}' has {}: zip the series' files under relative names", shown, entry.name.substr(0, 200), problem));
      }
      if (entry.name.back() != '/') files.push_back(std::move(entry));  // a folder entry has no data
    }
    if (files.empty()) throw rejected(400, fmt::format("{}: the zip holds no files (expected the DICOM files of one series)", shown));
    if (options.max_zip_entries > 0 && static_cast<int64_t>(files.size()) > options.max_zip_entries) {
      throw rejected(413, fmt::format("{}: {} files, more than the server's --max-zip-entries {}", shown, files.size(), options.max_zip_entries));
    }
    uint64_t total = 0;
    for (const io::ZipEntry& entry : files) total += std::min<uint64_t>(entry.size, uint64_t{1} << 62);  // no overflow
    if (options.max_unzipped_bytes > 0 && total > static_cast<uint64_t>(options.max_unzipped_bytes)) {
      throw rejected(413, fmt::format("{}: the files inflate to {} bytes, more than the server's --max-unzipped-mb {} (a decompression bomb?)", shown, total,
                                      options.max_unzipped_bytes >> 20));
    }
    fs::create_directory(dir);
    const auto server_side = [](const std::function<void()>& action) {  // a full disk is the server's fault (500), not the zip's
      try {
        action();
      } catch (const Error& e) { throw std::runtime_error(e.what()); }
    };
    for (size_t i = 0; i < files.size(); ++i) {
      std::optional<io::AtomicFile> out;
      server_side([&] { out.emplace(fmt::format("{}/{:06d}", dir, i)); });
      io::zip_read(*file, files[i], [&](const uint8_t* data, size_t size) { server_side([&] { out->write(data, size); }); });
      server_side([&] { out->commit(); });
    }
  } catch (const Error& e) { throw rejected(400, e.what()); }
}

}  // namespace

std::string random_hex(size_t chars) {
  static const char* digits = "0123456789abcdef";
  std::random_device device;  // /dev/urandom
  std::string out;
  while (out.size() < chars) {
    uint32_t bits = device();
    for (int i = 0; i < 8 && out.size() < chars; ++i, bits >>= 4) out += digits[bits & 15];
  }
  return out;
}

bool study_id_valid(const std::string& id) {
  return id.size() == 16 && std::all_of(id.begin(), id.end(), [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}

json study_public(const json& meta) {
  json out = meta;
  out.erase("file");
  return out;
}

StudyStore::Upload::Upload(std::string id, std::string dir) : id_(std::move(id)), dir_(std::move(dir)) {
  fd_ = ::open((dir_ + "/body").c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd_ < 0) server_fail(dir_ + "/body: cannot create the upload", errno);
}

StudyStore::Upload::~Upload() {
  if (fd_ >= 0) ::close(fd_);
  std::error_code ec;
  if (!committed_) fs::remove_all(dir_, ec);
}

void StudyStore::Upload::write(const char* data, size_t size) {
  if (head_.size() < kHeadBytes) head_.append(data, std::min(size, kHeadBytes - head_.size()));
  bytes_ += static_cast<int64_t>(size);
  while (size > 0) {
    const ssize_t n = ::write(fd_, data, size);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) server_fail(dir_ + "/body: cannot write the upload", errno);
    data += n;
    size -= static_cast<size_t>(n);
  }
}

StudyStore::StudyStore(StoreOptions options) : options_(std::move(options)), scans_(options_.cached_scans) {
  const fs::path root(options_.data_dir);
  fs::create_directories(root / "studies");
  fs::create_directories(root / "tmp");
  for (const auto& entry : fs::directory_iterator(root / "tmp")) fs::remove_all(entry.path());  // interrupted uploads and deletes
  for (const auto& entry : fs::directory_iterator(root / "studies")) {
    const std::string id = entry.path().filename().string();
    const fs::path meta_path = entry.path() / "meta.json";
    try {
      std::ifstream in(meta_path);
      const json meta = json::parse(in);
      if (!study_id_valid(id) || meta.at("id") != id || !fs::exists(entry.path() / meta.at("file").get<std::string>())) {
        throw std::runtime_error("not a study directory");
      }
      studies_[id] = meta;
    } catch (const std::exception& e) { spdlog::warn("{}: skipped ({}); remove it or restore its meta.json", entry.path().string(), e.what()); }
  }
}

std::string StudyStore::study_dir(const std::string& id) const {
  if (!study_id_valid(id)) throw std::logic_error("study id '" + id + "' reached a path");  // the routes check first
  return options_.data_dir + "/studies/" + id;
}

std::unique_ptr<StudyStore::Upload> StudyStore::begin_upload() {
  const std::string id = random_hex(16);
  const std::string dir = options_.data_dir + "/tmp/" + id;
  if (!fs::create_directory(dir)) throw std::runtime_error(dir + ": exists already");
  return std::make_unique<Upload>(id, dir);
}

PreparedScan StudyStore::prepare(const std::string& path, const std::string& shown_as) const {
  try {
    PrepareOptions prepare;
    prepare.model_dir = options_.model_dir;
    return PreparedScan::prepare(path, prepare);
  } catch (const Error& e) {
    std::string message = e.what();  // names the server's path: show the client's file name instead
    replace_all(message, path, shown_as);
    throw StudyRejected(400, message);
  }
}

json StudyStore::commit(Upload& upload, const std::string& filename, const std::string& content_type) {
  if (upload.bytes_ == 0) throw StudyRejected(400, "empty body: send the scan file itself as the request body");
  if (::fsync(upload.fd_) != 0) server_fail(upload.dir_ + "/body: fsync", errno);
  ::close(upload.fd_);
  upload.fd_ = -1;
  const std::string ext = upload_extension(filename, content_type, upload.head_);
  const std::string file = ext == ".zip" ? "series" : "scan" + ext;  // a DICOM series: its unpacked folder
  const std::string shown = shown_name(filename, ext);
  if (ext == ".zip") {
    unzip_series(upload.dir_ + "/body", upload.dir_ + "/" + file, shown, options_);
    fs::remove(upload.dir_ + "/body");
  } else {
    fs::rename(upload.dir_ + "/body", upload.dir_ + "/" + file);
  }
  const PreparedScan scan = prepare(upload.dir_ + "/" + file, shown);
  const auto size = scan.scan_size();
  if (options_.max_voxels > 0 && size[0] * size[1] * size[2] > options_.max_voxels) {
    throw StudyRejected(400, fmt::format("{}: {} x {} x {} voxels exceed the server's --max-voxels {}", shown, size[0], size[1], size[2], options_.max_voxels));
  }
  if (!scan.has_map() && scan.model_size() != options_.model_grid) {
    const auto& g = options_.model_grid;
    throw StudyRejected(400, fmt::format("{}: a model-space volume of {} x {} x {}, but the model takes {} x {} x {} (send the scan itself)", shown,
                                         scan.model_size()[0], scan.model_size()[1], scan.model_size()[2], g[0], g[1], g[2]));
  }
  const Geometry geometry = scan.scan_geometry();
  const json meta = {
      {"id", upload.id_},
      {"object", "study"},
      {"filename", shown},
      {"format", format_name(ext)},
      {"bytes", upload.bytes_},
      {"created", static_cast<int64_t>(std::time(nullptr))},
      {"scan",
       {{"size_ijk", size}, {"spacing", geometry.spacing}, {"origin", geometry.origin}, {"direction", geometry.direction}, {"has_map", scan.has_map()}}},
      {"model_grid", scan.model_size()},
      {"file", file}};
  io::write_file_atomic(upload.dir_ + "/meta.json", meta.dump(2, ' ', false, json::error_handler_t::replace));
  fsync_dir(upload.dir_);
  fs::rename(upload.dir_, study_dir(upload.id_));  // the study appears whole or not at all
  fsync_dir(options_.data_dir + "/studies");
  upload.committed_ = true;
  std::lock_guard<std::mutex> lock(mutex_);
  studies_[upload.id_] = meta;
  scans_.put(upload.id_, scan);
  return meta;
}

std::optional<json> StudyStore::get(const std::string& id) const {
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = studies_.find(id);
  if (it == studies_.end()) return std::nullopt;
  return it->second;
}

json StudyStore::list() const {
  std::lock_guard<std::mutex> lock(mutex_);
  std::vector<json> all;
  for (const auto& [id, meta] : studies_) all.push_back(study_public(meta));
  std::stable_sort(all.begin(), all.end(), [](const json& a, const json& b) { return a.value("created", 0) < b.value("created", 0); });
  return all;
}

bool StudyStore::remove(const std::string& id) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (studies_.erase(id) == 0) return false;
  }
  scans_.erase(id);
  // Moved out of studies/ first, so an interrupted delete never leaves half a study there.
  const std::string doomed = options_.data_dir + "/tmp/deleted-" + id;
  fs::rename(study_dir(id), doomed);
  fsync_dir(options_.data_dir + "/studies");
  fs::remove_all(doomed);
  return true;
}

std::optional<PreparedScan> StudyStore::scan(const std::string& id) {
  if (auto cached = scans_.get(id)) return cached;
  const std::optional<json> meta = get(id);
  if (!meta) return std::nullopt;
  PreparedScan scan = prepare(study_dir(id) + "/" + meta->at("file").get<std::string>(), meta->at("filename").get<std::string>());
  scans_.put(id, scan);
  return scan;
}

std::string StudyStore::mask_save(const std::string& id, const RawVolume& mask, const std::optional<DicomSegLabel>& dicom_seg) {
  const std::string mask_id = random_hex(16);
  const std::string ext = dicom_seg ? ".dcm" : ".nii.gz";
  const std::string staged = options_.data_dir + "/tmp/mask-" + mask_id + ext;
  if (dicom_seg) {
    const std::optional<json> meta = get(id);
    if (!meta) throw StudyRejected(404, "no study '" + id + "' (deleted while its mask was computed)");
    try {
      mask_write_dicom_seg(staged, study_dir(id) + "/" + meta->at("file").get<std::string>(), mask, dicom_seg->question, dicom_seg->prompts);
    } catch (const Error&) {
      if (!get(id)) throw StudyRejected(404, "no study '" + id + "' (deleted while its mask was computed)");
      throw;
    }
  } else {
    volume_write(staged, mask);  // itself temp -> read back -> rename
  }
  std::lock_guard<std::mutex> lock(mutex_);  // remove() takes a study out of studies_ before moving its folder
  if (studies_.count(id) == 0) {
    std::error_code ignored;
    fs::remove(staged, ignored);
    throw StudyRejected(404, "no study '" + id + "' (deleted while its mask was computed)");
  }
  const std::string dir = study_dir(id) + "/masks";
  fs::create_directories(dir);
  fs::rename(staged, dir + "/" + mask_id + ext);
  fsync_dir(dir);
  return mask_id;
}

std::optional<std::string> StudyStore::mask_path(const std::string& id, const std::string& mask_id, const std::string& ext) const {
  if (!study_id_valid(mask_id) || !get(id) || (ext != ".nii.gz" && ext != ".dcm")) return std::nullopt;
  const std::string path = study_dir(id) + "/masks/" + mask_id + ext;
  if (!fs::is_regular_file(path)) return std::nullopt;
  return path;
}

size_t StudyStore::size() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return studies_.size();
}

}  // namespace m3d::cli
