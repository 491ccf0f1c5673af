// DICOM-SEG output against highdicom: tests/fixtures/dicom_seg (tools/reference/
// make_dicom_seg_fixtures.py) holds a synthetic CT series, a mask on it and what highdicom's
// Segmentation writes for them. m3d's SEG of the same series and mask, read back with GDCM's
// parser, must carry the same frames (packed bits), per-frame positions and source references,
// pixel measures, segment description and copied patient / study attributes. m3d's reader
// decodes highdicom's SEG (highdicom_seg.dcm) back to the mask.
#include <gtest/gtest.h>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <gdcmReader.h>
#include <gdcmSequenceOfItems.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <map>
#include <sstream>

#include "imaging/dicom_seg.h"
#include "m3d/error.h"
#include "test_support.h"

namespace m3d::test {
namespace {

namespace fs = std::filesystem;
using gdcm::Tag;

std::string text(const gdcm::DataSet& ds, const Tag& tag) {
  if (!ds.FindDataElement(tag)) return "<absent>";
  const gdcm::ByteValue* bv = ds.GetDataElement(tag).GetByteValue();
  std::string s = bv == nullptr ? "" : std::string(bv->GetPointer(), bv->GetLength());
  while (!s.empty() && (s.back() == ' ' || s.back() == '\0')) s.pop_back();
  return s;
}

std::vector<double> numbers(const gdcm::DataSet& ds, const Tag& tag) {
  std::vector<double> out;
  std::stringstream stream(text(ds, tag));
  std::string part;
  while (std::getline(stream, part, '\\')) out.push_back(std::stod(part));
  return out;
}

// Little-endian unsigned values of a US / UL element.
std::vector<uint32_t> words(const gdcm::DataSet& ds, const Tag& tag, size_t width) {
  const gdcm::ByteValue* bv = ds.GetDataElement(tag).GetByteValue();
  std::vector<uint32_t> out;
  for (size_t i = 0; bv != nullptr && i + width <= bv->GetLength(); i += width) {
    uint32_t v = 0;
    for (size_t b = 0; b < width; ++b) v |= static_cast<uint32_t>(static_cast<uint8_t>(bv->GetPointer()[i + b])) << (8 * b);
    out.push_back(v);
  }
  return out;
}

// An AT value as "ggggeeee": the group's 16 bits, then the element's, each little-endian.
std::string attribute_tag(const gdcm::DataSet& ds, const Tag& tag) {
  const uint32_t v = words(ds, tag, 2).size() == 2 ? (words(ds, tag, 2)[0] << 16 | words(ds, tag, 2)[1]) : 0;
  return fmt::format("{:08x}", v);
}

const gdcm::DataSet& item(const gdcm::DataSet& ds, const Tag& tag, size_t index = 1) {
  const auto sequence = ds.GetDataElement(tag).GetValueAsSQ();
  if (!sequence || sequence->GetNumberOfItems() < index) throw std::runtime_error("missing sequence item");
  return sequence->GetItem(index).GetNestedDataSet();
}

size_t items(const gdcm::DataSet& ds, const Tag& tag) {
  if (!ds.FindDataElement(tag)) return 0;
  const auto sequence = ds.GetDataElement(tag).GetValueAsSQ();
  return sequence ? sequence->GetNumberOfItems() : 0;
}

std::vector<std::string> code(const gdcm::DataSet& ds) { return {text(ds, Tag(0x0008, 0x0100)), text(ds, Tag(0x0008, 0x0102)), text(ds, Tag(0x0008, 0x0104))}; }

class DicomSeg : public ::testing::Test {
 protected:
  void SetUp() override {
    series_ = fixture("dicom_seg/series");
    expected_ = read_json(fixture("dicom_seg/expected.json"));
    scan_ = volume_read(series_);
    mask_ = scan_;
    mask_.dtype = DType::U8;
    mask_.data.assign(static_cast<size_t>(mask_.voxels()), 0);
    const auto& m = expected_["mask"];  // (slices, rows, columns), lowest z first
    for (size_t k = 0; k < m.size(); ++k) {
      for (size_t r = 0; r < m[k].size(); ++r) {
        for (size_t c = 0; c < m[k][r].size(); ++c) mask_.data[(k * m[k].size() + r) * m[k][r].size() + c] = m[k][r][c].get<uint8_t>();
      }
    }
    dir_ = temp_dir();
  }
  gdcm::DataSet write_and_read(const RawVolume& mask, const std::string& label) {
    imaging::DicomSegOptions options;
    options.label = label;
    imaging::dicom_seg_write(dir_ + "/seg.dcm", series_, mask, options);
    reader_.SetFileName((dir_ + "/seg.dcm").c_str());
    EXPECT_TRUE(reader_.Read());
    return reader_.GetFile().GetDataSet();
  }
  std::string series_, dir_;
  nlohmann::json expected_;
  RawVolume scan_, mask_;
  gdcm::Reader reader_;
};

TEST_F(DicomSeg, SeriesReadsAsTheScriptWroteIt) {
  ASSERT_EQ(scan_.size, (std::array<int64_t, 3>{expected_["columns"].get<int64_t>(), expected_["rows"].get<int64_t>(), 6}));
  EXPECT_EQ(scan_.info.series_uid, expected_["source_series_uid"].get<std::string>());
  EXPECT_NEAR(scan_.geometry.spacing[2], 2.5, 1e-9);
}

TEST_F(DicomSeg, MatchesHighdicom) {
  const gdcm::DataSet ds = write_and_read(mask_, expected_["label"].get<std::string>());
  const auto& e = expected_;
  EXPECT_EQ(text(ds, Tag(0x0008, 0x0016)), e["sop_class_uid"].get<std::string>());
  EXPECT_EQ(text(ds, Tag(0x0008, 0x0060)), e["modality"].get<std::string>());
  EXPECT_EQ(text(ds, Tag(0x0062, 0x0001)), e["segmentation_type"].get<std::string>());
  EXPECT_EQ(text(ds, Tag(0x0028, 0x0004)), e["photometric_interpretation"].get<std::string>());
  EXPECT_EQ(words(ds, Tag(0x0028, 0x0010), 2), std::vector<uint32_t>{e["rows"].get<uint32_t>()});
  EXPECT_EQ(words(ds, Tag(0x0028, 0x0011), 2), std::vector<uint32_t>{e["columns"].get<uint32_t>()});
  EXPECT_EQ(words(ds, Tag(0x0028, 0x0100), 2), std::vector<uint32_t>{e["bits_allocated"].get<uint32_t>()});
  EXPECT_EQ(words(ds, Tag(0x0028, 0x0101), 2), std::vector<uint32_t>{e["bits_stored"].get<uint32_t>()});
  EXPECT_EQ(words(ds, Tag(0x0028, 0x0102), 2), std::vector<uint32_t>{e["high_bit"].get<uint32_t>()});
  EXPECT_EQ(std::stoi(text(ds, Tag(0x0028, 0x0008))), e["number_of_frames"].get<int>());
  EXPECT_EQ(text(ds, Tag(0x0020, 0x0052)), e["frame_of_reference_uid"].get<std::string>());
  const std::map<std::string, Tag> study = {{"StudyInstanceUID", Tag(0x0020, 0x000d)}, {"PatientName", Tag(0x0010, 0x0010)},
                                            {"PatientID", Tag(0x0010, 0x0020)},        {"PatientBirthDate", Tag(0x0010, 0x0030)},
                                            {"PatientSex", Tag(0x0010, 0x0040)},       {"StudyDate", Tag(0x0008, 0x0020)},
                                            {"StudyTime", Tag(0x0008, 0x0030)},        {"StudyID", Tag(0x0020, 0x0010)},
                                            {"AccessionNumber", Tag(0x0008, 0x0050)},  {"ReferringPhysicianName", Tag(0x0008, 0x0090)}};
  for (const auto& [name, tag] : study) EXPECT_EQ(text(ds, tag), e["study"][name].get<std::string>()) << name;
  // New series and instance, not the source's.
  EXPECT_NE(text(ds, Tag(0x0020, 0x000e)), e["source_series_uid"].get<std::string>());
  EXPECT_FALSE(text(ds, Tag(0x0008, 0x0018)).empty());
  // Common instance reference: every source slice.
  const gdcm::DataSet& series = item(ds, Tag(0x0008, 0x1115));
  EXPECT_EQ(text(series, Tag(0x0020, 0x000e)), e["referenced_series_uid"].get<std::string>());
  std::vector<std::string> referenced;
  for (size_t i = 1; i <= items(series, Tag(0x0008, 0x114a)); ++i) referenced.push_back(text(item(series, Tag(0x0008, 0x114a), i), Tag(0x0008, 0x1155)));
  std::sort(referenced.begin(), referenced.end());
  EXPECT_EQ(referenced, e["referenced_instances"].get<std::vector<std::string>>());
  // Dimension index: segment number, then the plane position.
  ASSERT_EQ(items(ds, Tag(0x0020, 0x9222)), 2u);
  for (size_t i = 0; i < 2; ++i) {
    const gdcm::DataSet& d = item(ds, Tag(0x0020, 0x9222), i + 1);
    EXPECT_EQ(attribute_tag(d, Tag(0x0020, 0x9165)), e["dimension_index_pointers"][i][0].get<std::string>());
    EXPECT_EQ(attribute_tag(d, Tag(0x0020, 0x9167)), e["dimension_index_pointers"][i][1].get<std::string>());
  }
  // The segment.
  const gdcm::DataSet& segment = item(ds, Tag(0x0062, 0x0002));
  EXPECT_EQ(words(segment, Tag(0x0062, 0x0004), 2), std::vector<uint32_t>{e["segment"]["number"].get<uint32_t>()});
  EXPECT_EQ(text(segment, Tag(0x0062, 0x0005)), e["segment"]["label"].get<std::string>());
  EXPECT_EQ(text(segment, Tag(0x0062, 0x0008)), e["segment"]["algorithm_type"].get<std::string>());
  EXPECT_EQ(code(item(segment, Tag(0x0062, 0x0003))), e["segment"]["category"].get<std::vector<std::string>>());
  EXPECT_EQ(code(item(segment, Tag(0x0062, 0x000f))), e["segment"]["type"].get<std::vector<std::string>>());
  // Shared functional groups.
  const gdcm::DataSet& shared = item(ds, Tag(0x5200, 0x9229));
  const gdcm::DataSet& measures = item(shared, Tag(0x0028, 0x9110));
  EXPECT_EQ(numbers(measures, Tag(0x0028, 0x0030)), e["pixel_spacing"].get<std::vector<double>>());
  EXPECT_EQ(numbers(measures, Tag(0x0018, 0x0050)).at(0), e["slice_thickness"].get<double>());
  EXPECT_EQ(numbers(measures, Tag(0x0018, 0x0088)).at(0), e["spacing_between_slices"].get<double>());
  EXPECT_EQ(numbers(item(shared, Tag(0x0020, 0x9116)), Tag(0x0020, 0x0037)), e["image_orientation"].get<std::vector<double>>());
  EXPECT_EQ(words(item(shared, Tag(0x0062, 0x000a)), Tag(0x0062, 0x000b), 2), std::vector<uint32_t>{1});
  // Per frame: position, source reference, dimension index values, in highdicom's order.
  const auto& frames = e["per_frame"];
  ASSERT_EQ(items(ds, Tag(0x5200, 0x9230)), frames.size());
  for (size_t f = 0; f < frames.size(); ++f) {
    const gdcm::DataSet& group = item(ds, Tag(0x5200, 0x9230), f + 1);
    EXPECT_EQ(numbers(item(group, Tag(0x0020, 0x9113)), Tag(0x0020, 0x0032)), frames[f]["image_position"].get<std::vector<double>>()) << f;
    const gdcm::DataSet& source = item(item(group, Tag(0x0008, 0x9124)), Tag(0x0008, 0x2112));
    EXPECT_EQ(text(source, Tag(0x0008, 0x1155)), frames[f]["referenced_sop_instance_uid"].get<std::string>()) << f;
    EXPECT_EQ(text(source, Tag(0x0008, 0x1150)), frames[f]["referenced_sop_class_uid"].get<std::string>()) << f;
    const auto index = words(item(group, Tag(0x0020, 0x9111)), Tag(0x0020, 0x9157), 4);
    EXPECT_EQ(std::vector<uint32_t>(index.begin(), index.end()), frames[f]["dimension_index_values"].get<std::vector<uint32_t>>()) << f;
  }
  // The packed bits, byte for byte. An odd length is padded to even with one byte: 0 here;
  // highdicom 0.28 appends b'0' (0x30, image.py), so its pad byte is not compared.
  const std::string hex = e["pixel_data_hex"].get<std::string>();
  const size_t data_bytes = (e["number_of_frames"].get<size_t>() * e["rows"].get<size_t>() * e["columns"].get<size_t>() + 7) / 8;
  ASSERT_GE(hex.size(), 2 * data_bytes);
  const gdcm::ByteValue* pixels = ds.GetDataElement(Tag(0x7fe0, 0x0010)).GetByteValue();
  ASSERT_NE(pixels, nullptr);
  ASSERT_EQ(pixels->GetLength(), (data_bytes + 1) / 2 * 2);
  std::string got;
  for (size_t i = 0; i < data_bytes; ++i) got += fmt::format("{:02x}", static_cast<uint8_t>(pixels->GetPointer()[i]));
  EXPECT_EQ(got, hex.substr(0, 2 * data_bytes));
  if (pixels->GetLength() > data_bytes) { EXPECT_EQ(pixels->GetPointer()[data_bytes], '\0'); }
}

TEST_F(DicomSeg, ReadsHighdicomsSegAndItsOwnBack) {
  const RawVolume theirs = imaging::dicom_seg_read(fixture("dicom_seg/highdicom_seg.dcm"), series_, scan_);
  EXPECT_EQ(theirs.size, mask_.size);
  EXPECT_EQ(theirs.data, mask_.data);
  write_and_read(mask_, "liver");
  EXPECT_EQ(imaging::dicom_seg_read(dir_ + "/seg.dcm", series_, scan_).data, mask_.data);
  expect_one_line_error([&] { imaging::dicom_seg_read(series_ + "/slice_00.dcm", series_, scan_); }, "slice_00.dcm", "not a DICOM Segmentation");
}

TEST_F(DicomSeg, EmptyMaskKeepsEveryFrame) {
  RawVolume empty = mask_;
  std::fill(empty.data.begin(), empty.data.end(), 0);
  const gdcm::DataSet ds = write_and_read(empty, "nothing");
  EXPECT_EQ(text(ds, Tag(0x0028, 0x0008)), "6");
  ASSERT_EQ(items(ds, Tag(0x5200, 0x9230)), 6u);
  // Highest z first (highdicom's order for an axial series); the source slices in reverse.
  const auto uids = expected_["source_sop_instance_uids"].get<std::vector<std::string>>();
  for (size_t f = 0; f < 6; ++f) {
    const gdcm::DataSet& source = item(item(item(ds, Tag(0x5200, 0x9230), f + 1), Tag(0x0008, 0x9124)), Tag(0x0008, 0x2112));
    EXPECT_EQ(text(source, Tag(0x0008, 0x1155)), uids[5 - f]) << f;
  }
}

TEST_F(DicomSeg, LabelIsPrintableAsciiOf64) {
  const gdcm::DataSet ds = write_and_read(mask_, "segment the liver\\spleen, caf\xc3\xa9 " + std::string(80, 'x'));
  const std::string label = text(item(ds, Tag(0x0062, 0x0002)), Tag(0x0062, 0x0005));
  EXPECT_EQ(label.size(), 64u);
  EXPECT_EQ(label.substr(0, 27), "segment the liver_spleen, c");
  EXPECT_EQ(label.find_first_not_of(" !\"#$%&'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[]^_`abcdefghijklmnopqrstuvwxyz{|}~"), std::string::npos);
}

// David Clunie's dciodvfy (Debian dicom3tools) checks the file against the standard's IOD
// and module tables: m3d's SEG must give no "Error" line (warnings are reported, not failed).
TEST_F(DicomSeg, DciodvfyFindsNoErrors) {
  write_and_read(mask_, "liver");
  const std::string command = "dciodvfy " + dir_ + "/seg.dcm 2>&1";
  FILE* pipe = popen(command.c_str(), "r");
  ASSERT_NE(pipe, nullptr);
  std::string output;
  char buffer[4096];
  while (size_t n = std::fread(buffer, 1, sizeof buffer, pipe)) output.append(buffer, n);
  const int status = pclose(pipe);
  ASSERT_NE(output.find("Segmentation"), std::string::npos) << "dciodvfy missing or did not recognise the IOD (scripts/setup.sh installs dicom3tools):\n"
                                                            << output;
  std::vector<std::string> errors;
  std::stringstream lines(output);
  for (std::string line; std::getline(lines, line);) {
    if (line.rfind("Error", 0) == 0) errors.push_back(line);
  }
  EXPECT_TRUE(errors.empty()) << fmt::format("{}", fmt::join(errors, "\n"));
  EXPECT_EQ(status, 0) << output;
  std::printf("dciodvfy: %zu error lines\n%s", errors.size(), output.c_str());
}

TEST_F(DicomSeg, ErrorsLeaveNoFile) {
  const std::string out = dir_ + "/seg.dcm";
  RawVolume small = mask_;
  small.size[2] = 5;
  small.data.resize(static_cast<size_t>(small.voxels()));
  expect_one_line_error([&] { imaging::dicom_seg_write(out, series_, small, {}); }, series_, "the series has 6 slices of 12 x 13");
  RawVolume shifted = mask_;
  shifted.geometry.origin[2] += 1.0;
  expect_one_line_error([&] { imaging::dicom_seg_write(out, series_, shifted, {}); }, "", "is not a slice of the mask's grid");
  const std::string empty_dir = dir_ + "/empty";
  fs::create_directories(empty_dir);
  expect_one_line_error([&] { imaging::dicom_seg_write(out, empty_dir, mask_, {}); }, out, "--dicom-seg needs a DICOM series input");
  EXPECT_FALSE(fs::exists(out));
}

}  // namespace
}  // namespace m3d::test
