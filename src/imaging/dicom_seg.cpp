// DICOM-SEG writer: PS3.3 A.51 Segmentation IOD (binary), built element by element and
// serialized by gdcm::Writer. Which attributes, and how frames are chosen and ordered, follow
// highdicom 0.28's Segmentation (tests/fixtures/dicom_seg/expected.json records its output).
#include "imaging/dicom_seg.h"

#include <fmt/format.h>
#include <gdcmReader.h>
#include <gdcmSequenceOfItems.h>
#include <gdcmUIDGenerator.h>
#include <gdcmWriter.h>

#include <algorithm>
#include <cmath>
#include <ctime>
#include <array>
#include <filesystem>
#include <map>
#include <sstream>
#include <tuple>
#include <vector>

#include "io/atomic_file.h"
#include "m3d/error.h"

namespace m3d::imaging {
namespace {

namespace fs = std::filesystem;
using gdcm::Tag;
using gdcm::VR;

constexpr const char* kSegmentationStorage = "1.2.840.10008.5.1.4.1.1.66.4";

std::string trimmed(std::string s) {
  while (!s.empty() && (s.back() == ' ' || s.back() == '\0')) s.pop_back();
  return s;
}

std::string text_of(const gdcm::DataSet& ds, const Tag& tag) {
  if (!ds.FindDataElement(tag)) return "";
  const gdcm::ByteValue* bv = ds.GetDataElement(tag).GetByteValue();
  return bv == nullptr ? "" : trimmed(std::string(bv->GetPointer(), bv->GetLength()));
}

// A decimal-string attribute's numbers (e.g. ImagePositionPatient's three).
std::vector<double> numbers_of(const gdcm::DataSet& ds, const Tag& tag, size_t count, const std::string& file, const char* name) {
  const std::string value = text_of(ds, tag);
  std::vector<double> out;
  std::stringstream stream(value);
  std::string part;
  while (std::getline(stream, part, '\\')) {
    try {
      out.push_back(std::stod(part));
    } catch (const std::exception&) { fail("{}: {} '{}' is not a list of numbers", file, name, value); }
  }
  if (out.size() != count) fail("{}: {} '{}': expected {} numbers", file, name, value, count);
  return out;
}

// A US attribute (Rows, Columns), 0 when absent.
long us_of(const gdcm::DataSet& ds, const Tag& tag) {
  if (!ds.FindDataElement(tag)) return 0;
  const gdcm::ByteValue* bv = ds.GetDataElement(tag).GetByteValue();
  if (bv == nullptr || bv->GetLength() < 2) return 0;
  const auto* p = reinterpret_cast<const uint8_t*>(bv->GetPointer());
  return p[0] | (p[1] << 8);
}

void put(gdcm::DataSet& ds, const Tag& tag, VR vr, std::string value) {
  if (value.size() % 2 != 0) value.push_back(vr == VR::UI || vr == VR::OB ? '\0' : ' ');
  gdcm::DataElement element(tag);
  element.SetVR(vr);
  element.SetByteValue(value.data(), static_cast<uint32_t>(value.size()));
  ds.Replace(element);
}

void put_us(gdcm::DataSet& ds, const Tag& tag, uint16_t value) {
  const char bytes[2] = {static_cast<char>(value & 0xff), static_cast<char>(value >> 8)};
  put(ds, tag, VR::US, std::string(bytes, 2));
}

// Little-endian 32-bit words: UL values, or AT tags as (group, element) pairs of 16 bits.
void put_words(gdcm::DataSet& ds, const Tag& tag, VR vr, const std::vector<uint32_t>& words) {
  std::string bytes;
  for (uint32_t w : words) {
    if (vr == VR::AT) w = (w >> 16) | (w << 16);  // AT stores the group first, each half little-endian
    for (int b = 0; b < 4; ++b) bytes.push_back(static_cast<char>((w >> (8 * b)) & 0xff));
  }
  put(ds, tag, vr, bytes);
}

void put_sequence(gdcm::DataSet& ds, const Tag& tag, const std::vector<gdcm::DataSet>& items) {
  gdcm::SmartPointer<gdcm::SequenceOfItems> sequence = new gdcm::SequenceOfItems;
  sequence->SetLengthToUndefined();
  for (const auto& nested : items) {
    gdcm::Item item;
    item.SetVLToUndefined();
    item.SetNestedDataSet(nested);
    sequence->AddItem(item);
  }
  gdcm::DataElement element(tag);
  element.SetVR(VR::SQ);
  element.SetValue(*sequence);
  element.SetVLToUndefined();
  ds.Replace(element);
}

// A code sequence item: (0008,0100) value, (0008,0102) scheme, (0008,0104) meaning.
gdcm::DataSet code(const std::string& value, const std::string& scheme, const std::string& meaning) {
  gdcm::DataSet item;
  put(item, Tag(0x0008, 0x0100), VR::SH, value);
  put(item, Tag(0x0008, 0x0102), VR::SH, scheme);
  put(item, Tag(0x0008, 0x0104), VR::LO, meaning);
  return item;
}

gdcm::DataSet with(const Tag& tag, VR vr, const std::string& value) {
  gdcm::DataSet item;
  put(item, tag, vr, value);
  return item;
}

gdcm::DataSet with_sequence(const Tag& tag, const std::vector<gdcm::DataSet>& items) {
  gdcm::DataSet item;
  put_sequence(item, tag, items);
  return item;
}

// One source slice, read up to its pixel data.
struct SourceSlice {
  std::string file, sop_class, sop_instance;
  std::array<double, 3> position{};
  gdcm::DataSet header;
  int64_t k = 0;  // its slice index on the mask's grid
};

std::vector<SourceSlice> source_slices(const std::string& dir, const std::string& series_uid) {
  std::vector<std::string> files;
  for (const auto& entry : fs::directory_iterator(dir)) {
    if (entry.is_regular_file()) files.push_back(entry.path().string());
  }
  std::sort(files.begin(), files.end());
  std::vector<SourceSlice> out;
  for (const auto& file : files) {
    gdcm::Reader reader;
    reader.SetFileName(file.c_str());
    if (!reader.ReadUpToTag(Tag(0x7fe0, 0x0010))) continue;  // not DICOM
    const gdcm::DataSet& ds = reader.GetFile().GetDataSet();
    if (text_of(ds, Tag(0x0020, 0x000e)) != series_uid) continue;
    SourceSlice slice;
    slice.file = file;
    slice.sop_class = text_of(ds, Tag(0x0008, 0x0016));
    slice.sop_instance = text_of(ds, Tag(0x0008, 0x0018));
    if (slice.sop_class.empty() || slice.sop_instance.empty()) fail("{}: no SOP Class / SOP Instance UID: a DICOM-SEG cannot reference it", file);
    const auto p = numbers_of(ds, Tag(0x0020, 0x0032), 3, file, "ImagePositionPatient");
    slice.position = {p[0], p[1], p[2]};
    slice.header = ds;
    out.push_back(std::move(slice));
  }
  if (out.empty()) fail("{}: no DICOM slice of series {}", dir, series_uid);
  return out;
}

// Each slice's k on the mask grid; the grid must be the series' own (as volume_read gives it).
void place_slices(std::vector<SourceSlice>& slices, const RawVolume& mask, const std::string& dir) {
  const auto& first = slices.front();
  const auto iop = numbers_of(first.header, Tag(0x0020, 0x0037), 6, first.file, "ImageOrientationPatient");
  const auto& d = mask.geometry.direction;  // column c: LPS direction of index axis c
  for (int a = 0; a < 3; ++a) {
    if (std::abs(iop[a] - d[3 * a]) > 1e-4 || std::abs(iop[3 + a] - d[3 * a + 1]) > 1e-4) {
      fail("{}: the mask's direction is not the series' ImageOrientationPatient: a DICOM-SEG needs the mask on the series' own grid", dir);
    }
  }
  const long rows = us_of(first.header, Tag(0x0028, 0x0010)), columns = us_of(first.header, Tag(0x0028, 0x0011));
  if (static_cast<int64_t>(slices.size()) != mask.size[2] || rows != mask.size[1] || columns != mask.size[0]) {
    fail("{}: the series has {} slices of {} x {} (rows x columns), the mask is {} x {} x {}", dir, slices.size(), rows, columns, mask.size[2], mask.size[1],
         mask.size[0]);
  }
  std::vector<bool> taken(slices.size(), false);
  for (auto& slice : slices) {
    const auto index = mask.geometry.physical_to_index(slice.position);
    const double k = std::round(index[2]);
    if (std::abs(index[0]) > 1e-2 || std::abs(index[1]) > 1e-2 || std::abs(index[2] - k) > 1e-2 || k < 0 || k >= mask.size[2] ||
        taken[static_cast<size_t>(k)]) {
      fail("{}: ImagePositionPatient [{}, {}, {}] is not a slice of the mask's grid (index {:.3f}, {:.3f}, {:.3f})", slice.file, slice.position[0],
           slice.position[1], slice.position[2], index[0], index[1], index[2]);
    }
    slice.k = static_cast<int64_t>(k);
    taken[static_cast<size_t>(k)] = true;
  }
}

std::string ascii_label(const std::string& label) {
  std::string out;
  for (char c : label) out.push_back(c >= 0x20 && c < 0x7f && c != '\\' ? c : '_');
  out = trimmed(out.substr(0, 64));
  return out.empty() ? "m3d segmentation" : out;
}

std::string ds_number(double v) {
  std::string s = fmt::format("{:.10g}", v);
  if (s.size() > 16) s = fmt::format("{:.8g}", v);
  return s;
}

// Copies patient, study and frame-of-reference attributes from a source slice (type 2
// attributes stay present, empty, when the source lacks them).
void copy_source_attributes(gdcm::DataSet& ds, const gdcm::DataSet& source) {
  const std::vector<std::pair<Tag, VR>> copied = {
      {Tag(0x0008, 0x0005), VR::CS}, {Tag(0x0008, 0x0020), VR::DA}, {Tag(0x0008, 0x0030), VR::TM}, {Tag(0x0008, 0x0050), VR::SH}, {Tag(0x0008, 0x0090), VR::PN},
      {Tag(0x0008, 0x1030), VR::LO}, {Tag(0x0010, 0x0010), VR::PN}, {Tag(0x0010, 0x0020), VR::LO}, {Tag(0x0010, 0x0030), VR::DA}, {Tag(0x0010, 0x0040), VR::CS},
      {Tag(0x0020, 0x000d), VR::UI}, {Tag(0x0020, 0x0010), VR::SH}, {Tag(0x0020, 0x0052), VR::UI}, {Tag(0x0020, 0x1040), VR::LO}};
  const std::vector<Tag> optional = {Tag(0x0008, 0x0005), Tag(0x0008, 0x1030)};
  for (const auto& [tag, vr] : copied) {
    const bool present = source.FindDataElement(tag);
    if (!present && std::find(optional.begin(), optional.end(), tag) != optional.end()) continue;
    put(ds, tag, vr, present ? text_of(source, tag) : "");
  }
  if (text_of(ds, Tag(0x0020, 0x000d)).empty() || text_of(ds, Tag(0x0020, 0x0052)).empty()) {
    fail("the source slices lack a Study Instance UID or Frame of Reference UID, which a DICOM-SEG must copy");
  }
}

// Top-level modules: SOP common, general series / equipment, segmentation series and image,
// multi-frame dimension, common instance reference, segment description.
void put_modules(gdcm::DataSet& ds, const std::vector<SourceSlice>& slices, const RawVolume& mask, const DicomSegOptions& options,
                 const std::string& series_uid, const std::string& dimension_uid, size_t frames) {
  gdcm::UIDGenerator uids;
  const std::string sop_uid = uids.Generate();
  std::time_t now = std::time(nullptr);
  std::tm utc{};
  gmtime_r(&now, &utc);
  char date[16], time[16];
  std::strftime(date, sizeof date, "%Y%m%d", &utc);
  std::strftime(time, sizeof time, "%H%M%S", &utc);
  copy_source_attributes(ds, slices.front().header);
  put(ds, Tag(0x0008, 0x0008), VR::CS, "DERIVED\\PRIMARY");
  put(ds, Tag(0x0008, 0x0012), VR::DA, date);
  put(ds, Tag(0x0008, 0x0013), VR::TM, time);
  put(ds, Tag(0x0008, 0x0016), VR::UI, kSegmentationStorage);
  put(ds, Tag(0x0008, 0x0018), VR::UI, sop_uid);
  put(ds, Tag(0x0008, 0x0023), VR::DA, date);
  put(ds, Tag(0x0008, 0x0033), VR::TM, time);
  put(ds, Tag(0x0008, 0x0060), VR::CS, "SEG");
  put(ds, Tag(0x0008, 0x0070), VR::LO, "m3d");
  put(ds, Tag(0x0008, 0x103e), VR::LO, ascii_label(options.series_description));
  put(ds, Tag(0x0008, 0x1090), VR::LO, "m3d");
  std::vector<gdcm::DataSet> instances;
  for (const auto& s : slices) {
    gdcm::DataSet item;
    put(item, Tag(0x0008, 0x1150), VR::UI, s.sop_class);
    put(item, Tag(0x0008, 0x1155), VR::UI, s.sop_instance);
    instances.push_back(item);
  }
  gdcm::DataSet referenced_series = with_sequence(Tag(0x0008, 0x114a), instances);
  put(referenced_series, Tag(0x0020, 0x000e), VR::UI, text_of(slices.front().header, Tag(0x0020, 0x000e)));
  put_sequence(ds, Tag(0x0008, 0x1115), {referenced_series});
  put(ds, Tag(0x0018, 0x1000), VR::LO, "0");
  put(ds, Tag(0x0018, 0x1020), VR::LO, M3D_VERSION);
  put(ds, Tag(0x0020, 0x000e), VR::UI, series_uid);
  put(ds, Tag(0x0020, 0x0011), VR::IS, std::to_string(options.series_number));
  put(ds, Tag(0x0020, 0x0013), VR::IS, "1");
  put_sequence(ds, Tag(0x0020, 0x9221), {with(Tag(0x0020, 0x9164), VR::UI, dimension_uid)});
  std::vector<gdcm::DataSet> dimensions;
  for (const auto& [index, group, label] :
       {std::tuple{0x0062000bu, 0x0062000au, "Referenced Segment Number"}, std::tuple{0x00200032u, 0x00209113u, "Image Position Patient"}}) {
    gdcm::DataSet item = with(Tag(0x0020, 0x9164), VR::UI, dimension_uid);
    put_words(item, Tag(0x0020, 0x9165), VR::AT, {index});
    put_words(item, Tag(0x0020, 0x9167), VR::AT, {group});
    put(item, Tag(0x0020, 0x9421), VR::LO, label);
    dimensions.push_back(item);
  }
  put_sequence(ds, Tag(0x0020, 0x9222), dimensions);
  put(ds, Tag(0x0020, 0x9311), VR::CS, "3D");
  put_us(ds, Tag(0x0028, 0x0002), 1);
  put(ds, Tag(0x0028, 0x0004), VR::CS, "MONOCHROME2");
  put(ds, Tag(0x0028, 0x0008), VR::IS, std::to_string(frames));
  put_us(ds, Tag(0x0028, 0x0010), static_cast<uint16_t>(mask.size[1]));
  put_us(ds, Tag(0x0028, 0x0011), static_cast<uint16_t>(mask.size[0]));
  put_us(ds, Tag(0x0028, 0x0100), 1);
  put_us(ds, Tag(0x0028, 0x0101), 1);
  put_us(ds, Tag(0x0028, 0x0102), 0);
  put_us(ds, Tag(0x0028, 0x0103), 0);
  put(ds, Tag(0x0028, 0x2110), VR::CS, "00");
  put(ds, Tag(0x0062, 0x0001), VR::CS, "BINARY");
  gdcm::DataSet segment;
  put_sequence(segment, Tag(0x0062, 0x0003), {code("85756007", "SCT", "Tissue")});
  put_us(segment, Tag(0x0062, 0x0004), 1);
  put(segment, Tag(0x0062, 0x0005), VR::LO, ascii_label(options.label));
  gdcm::DataSet algorithm = with_sequence(Tag(0x0066, 0x002f), {code("123110", "DCM", "Artificial Intelligence")});
  put(algorithm, Tag(0x0066, 0x0031), VR::LO, M3D_VERSION);
  put(algorithm, Tag(0x0066, 0x0036), VR::LO, "m3d");
  put_sequence(segment, Tag(0x0062, 0x0007), {algorithm});
  put(segment, Tag(0x0062, 0x0008), VR::CS, "AUTOMATIC");
  put(segment, Tag(0x0062, 0x0009), VR::LO, "m3d");
  put_sequence(segment, Tag(0x0062, 0x000f), {code("85756007", "SCT", "Tissue")});
  put_sequence(ds, Tag(0x0062, 0x0002), {segment});
  put(ds, Tag(0x0062, 0x0013), VR::CS, "NO");
  put(ds, Tag(0x0070, 0x0080), VR::CS, "M3D_SEG");
  put(ds, Tag(0x0070, 0x0081), VR::LO, "");
  put(ds, Tag(0x0070, 0x0084), VR::PN, "");
  put(ds, Tag(0x2050, 0x0020), VR::CS, "IDENTITY");
}

// Shared functional groups: orientation and pixel measures copied from the source, one segment.
gdcm::DataSet shared_groups(const SourceSlice& first, const RawVolume& mask) {
  gdcm::DataSet shared;
  put_sequence(shared, Tag(0x0020, 0x9116), {with(Tag(0x0020, 0x0037), VR::DS, text_of(first.header, Tag(0x0020, 0x0037)))});
  gdcm::DataSet measures;
  std::string thickness = text_of(first.header, Tag(0x0018, 0x0050));
  if (thickness.empty()) thickness = ds_number(mask.geometry.spacing[2]);
  put(measures, Tag(0x0018, 0x0050), VR::DS, thickness);
  put(measures, Tag(0x0018, 0x0088), VR::DS, ds_number(mask.geometry.spacing[2]));
  put(measures, Tag(0x0028, 0x0030), VR::DS, text_of(first.header, Tag(0x0028, 0x0030)));
  put_sequence(shared, Tag(0x0028, 0x9110), {measures});
  gdcm::DataSet segment;
  put_us(segment, Tag(0x0062, 0x000b), 1);
  put_sequence(shared, Tag(0x0062, 0x000a), {segment});
  return shared;
}

gdcm::DataSet frame_group(const SourceSlice& slice, uint32_t position_index) {
  gdcm::DataSet source;
  put(source, Tag(0x0008, 0x1150), VR::UI, slice.sop_class);
  put(source, Tag(0x0008, 0x1155), VR::UI, slice.sop_instance);
  put(source, Tag(0x0028, 0x135a), VR::CS, "YES");
  put_sequence(source, Tag(0x0040, 0xa170), {code("121322", "DCM", "Source image for image processing operation")});
  gdcm::DataSet derivation = with_sequence(Tag(0x0008, 0x2112), {source});
  put_sequence(derivation, Tag(0x0008, 0x9215), {code("113076", "DCM", "Segmentation")});
  gdcm::DataSet frame;
  put_sequence(frame, Tag(0x0008, 0x9124), {derivation});
  gdcm::DataSet content;
  put_words(content, Tag(0x0020, 0x9157), VR::UL, {1u, position_index});
  put_sequence(frame, Tag(0x0020, 0x9111), {content});
  put_sequence(frame, Tag(0x0020, 0x9113), {with(Tag(0x0020, 0x0032), VR::DS, text_of(slice.header, Tag(0x0020, 0x0032)))});
  return frame;
}

}  // namespace

bool is_dicom_series_dir(const std::string& path) {
  std::error_code ec;
  return fs::is_directory(path, ec) && !dicom_series_list(path).empty();
}

RawVolume dicom_seg_read(const std::string& path, const std::string& source_dir, const RawVolume& grid) {
  gdcm::Reader reader;
  reader.SetFileName(path.c_str());
  if (!reader.Read()) fail("{}: cannot parse the DICOM file (damaged or truncated)", path);
  const gdcm::DataSet& ds = reader.GetFile().GetDataSet();
  if (text_of(ds, Tag(0x0008, 0x0016)) != kSegmentationStorage) fail("{}: not a DICOM Segmentation (SOP class {})", path, text_of(ds, Tag(0x0008, 0x0016)));
  if (text_of(ds, Tag(0x0062, 0x0001)) != "BINARY" || us_of(ds, Tag(0x0028, 0x0100)) != 1) {
    fail("{}: only BINARY segmentations (1 bit a voxel) are read; this one is {}", path, text_of(ds, Tag(0x0062, 0x0001)));
  }
  if (us_of(ds, Tag(0x0028, 0x0010)) != grid.size[1] || us_of(ds, Tag(0x0028, 0x0011)) != grid.size[0]) {
    fail("{}: frames of {} x {} (rows x columns), the series' slices are {} x {}", path, us_of(ds, Tag(0x0028, 0x0010)), us_of(ds, Tag(0x0028, 0x0011)),
         grid.size[1], grid.size[0]);
  }
  RawVolume out = grid;
  out.dtype = DType::U8;
  out.data.assign(static_cast<size_t>(grid.voxels()), 0);
  std::string series = grid.info.series_uid.empty() ? dicom_series_list(source_dir).front().uid : grid.info.series_uid;
  std::vector<SourceSlice> slices = source_slices(source_dir, series);
  place_slices(slices, grid, source_dir);
  std::map<std::string, int64_t> slice_of;
  for (const auto& s : slices) slice_of[s.sop_instance] = s.k;
  const auto frames = ds.GetDataElement(Tag(0x5200, 0x9230)).GetValueAsSQ();
  const gdcm::ByteValue* pixels = ds.FindDataElement(Tag(0x7fe0, 0x0010)) ? ds.GetDataElement(Tag(0x7fe0, 0x0010)).GetByteValue() : nullptr;
  const int64_t plane = grid.size[0] * grid.size[1];
  const size_t count = frames ? frames->GetNumberOfItems() : 0;
  if (pixels == nullptr || pixels->GetLength() * 8 < count * plane) fail("{}: pixel data is missing or shorter than {} frames", path, count);
  const auto* bits = reinterpret_cast<const uint8_t*>(pixels->GetPointer());
  for (size_t f = 0; f < count; ++f) {
    const gdcm::DataSet& group = frames->GetItem(f + 1).GetNestedDataSet();
    const auto derivation = group.FindDataElement(Tag(0x0008, 0x9124)) ? group.GetDataElement(Tag(0x0008, 0x9124)).GetValueAsSQ() : nullptr;
    const auto source = derivation && derivation->GetNumberOfItems() > 0 && derivation->GetItem(1).GetNestedDataSet().FindDataElement(Tag(0x0008, 0x2112))
                            ? derivation->GetItem(1).GetNestedDataSet().GetDataElement(Tag(0x0008, 0x2112)).GetValueAsSQ()
                            : nullptr;
    const std::string uid = source && source->GetNumberOfItems() > 0 ? text_of(source->GetItem(1).GetNestedDataSet(), Tag(0x0008, 0x1155)) : "";
    const auto it = slice_of.find(uid);
    if (it == slice_of.end()) fail("{}: frame {} references '{}', no slice of series {} in {}", path, f + 1, uid, series, source_dir);
    uint8_t* voxels = out.data.data() + it->second * plane;
    for (int64_t v = 0; v < plane; ++v) {
      const int64_t bit = static_cast<int64_t>(f) * plane + v;
      if ((bits[bit / 8] >> (bit % 8)) & 1) voxels[v] = 1;
    }
  }
  return out;
}

void dicom_seg_write(const std::string& path, const std::string& source_dir, const RawVolume& mask, const DicomSegOptions& options) {
  if (mask.dtype != DType::U8 || static_cast<int64_t>(mask.data.size()) != mask.voxels()) fail("{}: a DICOM-SEG mask must be U8 voxels", path);
  if (!is_dicom_series_dir(source_dir)) fail("{}: --dicom-seg needs a DICOM series input (a folder of slices), not '{}'", path, source_dir);
  std::string series = !options.series_uid.empty() ? options.series_uid : mask.info.series_uid;
  if (series.empty()) series = dicom_series_list(source_dir).front().uid;
  std::vector<SourceSlice> slices = source_slices(source_dir, series);
  place_slices(slices, mask, source_dir);
  // highdicom's order: ascending distance along cross(column cosines, row cosines).
  const auto& d = mask.geometry.direction;
  const std::array<double, 3> row{d[0], d[3], d[6]}, col{d[1], d[4], d[7]};
  const std::array<double, 3> normal{col[1] * row[2] - col[2] * row[1], col[2] * row[0] - col[0] * row[2], col[0] * row[1] - col[1] * row[0]};
  auto distance = [&](const SourceSlice& s) { return normal[0] * s.position[0] + normal[1] * s.position[1] + normal[2] * s.position[2]; };
  std::sort(slices.begin(), slices.end(), [&](const SourceSlice& a, const SourceSlice& b) { return distance(a) < distance(b); });
  const int64_t plane = mask.size[0] * mask.size[1];
  auto any = [&](int64_t k) { return std::any_of(mask.data.begin() + k * plane, mask.data.begin() + (k + 1) * plane, [](uint8_t v) { return v != 0; }); };
  std::vector<const SourceSlice*> frames;
  for (const auto& s : slices) {
    if (any(s.k)) frames.push_back(&s);
  }
  if (frames.empty()) {
    for (const auto& s : slices) frames.push_back(&s);  // an empty mask keeps every frame, as highdicom does
  }
  gdcm::UIDGenerator uids;
  const std::string series_uid = uids.Generate(), dimension_uid = uids.Generate();
  gdcm::SmartPointer<gdcm::File> file = new gdcm::File;  // the writer keeps a counted reference to it
  gdcm::DataSet& ds = file->GetDataSet();
  put_modules(ds, slices, mask, options, series_uid, dimension_uid, frames.size());
  put_sequence(ds, Tag(0x5200, 0x9229), {shared_groups(slices.front(), mask)});
  std::vector<gdcm::DataSet> per_frame;
  std::string pixels((frames.size() * plane + 7) / 8, '\0');
  for (size_t f = 0; f < frames.size(); ++f) {
    per_frame.push_back(frame_group(*frames[f], static_cast<uint32_t>(f + 1)));
    // BITS_ALLOCATED 1: frames follow each other bit by bit, least significant bit first.
    const uint8_t* voxels = mask.data.data() + frames[f]->k * plane;
    for (int64_t v = 0; v < plane; ++v) {
      const int64_t bit = static_cast<int64_t>(f) * plane + v;
      if (voxels[v] != 0) pixels[bit / 8] = static_cast<char>(pixels[bit / 8] | (1 << (bit % 8)));
    }
  }
  put_sequence(ds, Tag(0x5200, 0x9230), per_frame);
  put(ds, Tag(0x7fe0, 0x0010), VR::OB, pixels);
  file->GetHeader().SetDataSetTransferSyntax(gdcm::TransferSyntax::ExplicitVRLittleEndian);
  std::ostringstream bytes;
  gdcm::Writer writer;
  writer.SetStream(bytes);
  writer.SetFile(*file);
  if (!writer.Write() || !bytes) fail("{}: GDCM could not encode the DICOM-SEG", path);
  io::write_file_atomic(path, bytes.str());
}

}  // namespace m3d::imaging
