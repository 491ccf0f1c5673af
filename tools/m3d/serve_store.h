// m3d serve's study store: uploaded scans on disk under DATA/studies/<id>/ (the file
// and meta.json), published by a directory rename only after the scan was read and
// prepared for the model, so a crash or a rejected upload leaves nothing behind;
// rescanned at start so studies survive a restart. Prepared scans are kept in a
// small in-memory LRU and prepared again on demand. Ids are 16 random hex digits and
// checked before any path is built from one.
#pragma once

#include <nlohmann/json.hpp>

#include <array>
#include <cstdint>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>

#include "m3d/recipe.h"
#include "m3d/session.h"

namespace m3d::cli {

// A small thread-safe least-recently-used map.
template <typename V>
class Lru {
 public:
  explicit Lru(size_t capacity) : capacity_(capacity) {}
  std::optional<V> get(const std::string& key) {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = index_.find(key);
    if (it == index_.end()) return std::nullopt;
    order_.splice(order_.begin(), order_, it->second);
    return it->second->second;
  }
  void put(const std::string& key, V value) {
    std::lock_guard<std::mutex> lock(mutex_);
    erase_locked(key);
    order_.emplace_front(key, std::move(value));
    index_[key] = order_.begin();
    if (order_.size() > capacity_) erase_locked(order_.back().first);
  }
  void erase(const std::string& key) {
    std::lock_guard<std::mutex> lock(mutex_);
    erase_locked(key);
  }

 private:
  void erase_locked(const std::string& key) {
    auto it = index_.find(key);
    if (it == index_.end()) return;
    order_.erase(it->second);
    index_.erase(it);
  }
  size_t capacity_;
  std::mutex mutex_;
  std::list<std::pair<std::string, V>> order_;
  std::map<std::string, typename std::list<std::pair<std::string, V>>::iterator> index_;
};

// An upload the client got wrong (unreadable scan, unknown format, too large): 400 or 413.
class StudyRejected : public std::runtime_error {
 public:
  StudyRejected(int status, const std::string& message) : std::runtime_error(message), status(status) {}
  int status;
};

// `chars` random lowercase hex digits.
std::string random_hex(size_t chars);
// Whether `id` is a study id (16 lowercase hex digits), so it can name a directory.
bool study_id_valid(const std::string& id);

struct StoreOptions {
  std::string data_dir, model_dir;
  std::array<int64_t, 3> model_grid{0, 0, 0};  // (D, H, W) the model takes; model-space uploads must match
  int64_t max_voxels = 0;  // of the original scan
  int64_t max_zip_entries = 0, max_unzipped_bytes = 0;  // a zipped DICOM series' files and their inflated bytes (0: no limit)
  size_t cached_scans = 4;
};

class StudyStore {
 public:
  // Creates DATA/studies and DATA/tmp, removes what an interrupted upload left in
  // tmp/, and indexes every studies/<id>/meta.json.
  explicit StudyStore(StoreOptions options);

  // The body of one upload, written to DATA/tmp/<id>/ as it arrives; removed unless
  // committed.
  class Upload {
   public:
    Upload(std::string id, std::string dir);
    ~Upload();
    Upload(const Upload&) = delete;
    Upload& operator=(const Upload&) = delete;
    void write(const char* data, size_t size);
    const std::string& id() const { return id_; }
    int64_t bytes() const { return bytes_; }

   private:
    friend class StudyStore;
    std::string id_, dir_, head_;  // head_: the first bytes, to recognise the format
    int fd_ = -1;
    int64_t bytes_ = 0;
    bool committed_ = false;
  };
  std::unique_ptr<Upload> begin_upload();
  // Names the file by its format (from `filename`'s extension, else `content_type`,
  // else its first bytes), prepares it for the model and publishes the study; its
  // JSON (the meta.json). StudyRejected (with the library's message) when the scan
  // cannot be read or prepared.
  nlohmann::json commit(Upload& upload, const std::string& filename, const std::string& content_type);

  std::optional<nlohmann::json> get(const std::string& id) const;
  nlohmann::json list() const;  // every study's JSON, oldest first
  bool remove(const std::string& id);  // false when there is none
  // The study prepared for the model (cached); std::nullopt for an unknown id.
  std::optional<PreparedScan> scan(const std::string& id);
  size_t size() const;
  // Saves a [SEG] mask (U8 on the study's own grid) beside the study as
  // masks/<mask id>.nii.gz or, given `dicom_seg` (the segment's question and prompts), as
  // masks/<mask id>.dcm, a DICOM-SEG of a DICOM study's series; written whole before it
  // appears there; its id. StudyRejected 404 when the study was deleted meanwhile (nothing
  // is left behind).
  struct DicomSegLabel {
    std::string question;
    SpatialPrompts prompts;
  };
  std::string mask_save(const std::string& id, const RawVolume& mask, const std::optional<DicomSegLabel>& dicom_seg = std::nullopt);
  // The file of a saved mask (`ext` .nii.gz or .dcm); std::nullopt when the study or the mask is not there.
  std::optional<std::string> mask_path(const std::string& id, const std::string& mask_id, const std::string& ext) const;

 private:
  std::string study_dir(const std::string& id) const;
  PreparedScan prepare(const std::string& path, const std::string& shown_as) const;

  StoreOptions options_;
  mutable std::mutex mutex_;
  std::map<std::string, nlohmann::json> studies_;  // id -> meta.json
  Lru<PreparedScan> scans_;
};

// What a client sees of a study: meta.json without the server-side file name.
nlohmann::json study_public(const nlohmann::json& meta);

}  // namespace m3d::cli
