// Volume readers and writers on real files from registry packages (Debian's
// python3-nibabel and python3-pydicom test data), against what nibabel and pydicom
// report (tools/reference/make_volume_fixtures.py), plus bad input.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>

#include "imaging/volume_io.h"
#include "io/npy.h"
#include "m3d/error.h"
#include "test_support.h"

namespace m3d::imaging {
namespace {

namespace fs = std::filesystem;

const nlohmann::json& reference() {
  static const nlohmann::json json = test::read_json(test::fixture("volumes/readers.json"));
  return json;
}

std::string data_file(const std::string& file) {
  const std::string prefix = file.substr(0, file.find('/'));
  const std::string root = reference()[prefix + "_data"];
  const std::string path = root + file.substr(file.find('/'));
  EXPECT_TRUE(fs::exists(path)) << path << " missing: scripts/setup.sh installs python3-nibabel and python3-pydicom";
  return path;
}

double voxel(const RawVolume& v, int64_t i, int64_t j, int64_t k) {
  const int64_t n = (k * v.size[1] + j) * v.size[0] + i;
  const uint8_t* p = v.data.data() + n * static_cast<int64_t>(dtype_size(v.dtype));
  switch (v.dtype) {
    case DType::U8:
      return *p;
    case DType::I8:
      return *reinterpret_cast<const int8_t*>(p);
    case DType::I16: {
      int16_t x;
      std::memcpy(&x, p, 2);
      return x;
    }
    case DType::I32: {
      int32_t x;
      std::memcpy(&x, p, 4);
      return x;
    }
    case DType::I64: {
      int64_t x;
      std::memcpy(&x, p, 8);
      return static_cast<double>(x);
    }
    case DType::F32: {
      float x;
      std::memcpy(&x, p, 4);
      return x;
    }
    case DType::F64: {
      double x;
      std::memcpy(&x, p, 8);
      return x;
    }
    default:
      ADD_FAILURE() << "unexpected dtype";
      return 0;
  }
}

void expect_values(const RawVolume& v, const nlohmann::json& want, const std::string& what) {
  ASSERT_EQ(v.data.size(), static_cast<size_t>(v.voxels()) * dtype_size(v.dtype));
  double sum = 0, lo = INFINITY, hi = -INFINITY;
  for (int64_t k = 0; k < v.size[2]; ++k) {
    for (int64_t j = 0; j < v.size[1]; ++j) {
      for (int64_t i = 0; i < v.size[0]; ++i) {
        const double x = voxel(v, i, j, k);
        sum += x, lo = std::min(lo, x), hi = std::max(hi, x);
      }
    }
  }
  const double tolerance = 1e-6 * std::max(1.0, std::abs(want["sum"].get<double>()));
  EXPECT_NEAR(sum, want["sum"].get<double>(), tolerance) << what;
  EXPECT_NEAR(lo, want["min"].get<double>(), 1e-5 * std::max(1.0, std::abs(lo))) << what;
  EXPECT_NEAR(hi, want["max"].get<double>(), 1e-5 * std::max(1.0, std::abs(hi))) << what;
  for (const auto& s : want["samples"]) {
    const auto index = s["index"].get<std::vector<int64_t>>();
    const double x = voxel(v, index[0], index[1], index[2]);
    EXPECT_NEAR(x, s["value"].get<double>(), 1e-5 * std::max(1.0, std::abs(x))) << what << " at " << s["index"].dump();
  }
}

TEST(VolumeRead, NiftiMatchesNibabel) {
  int checked = 0;
  for (const auto& c : reference()["cases"]) {
    const std::string file = c["file"];
    if (file.rfind("nibabel/", 0) != 0) continue;
    const RawVolume v = volume_read(data_file(file));
    EXPECT_EQ(v.info.format, "nifti") << file;
    EXPECT_EQ(std::vector<int64_t>(v.size.begin(), v.size.end()), c["shape"].get<std::vector<int64_t>>()) << file;
    EXPECT_EQ(v.info.frames, c["frames"].get<int64_t>()) << file;
    const auto affine = v.geometry.affine_ras();
    const auto want = c["affine_ras"].get<std::vector<double>>();
    for (int n = 0; n < 16; ++n) EXPECT_NEAR(affine[n], want[n], 1e-4) << file << " affine[" << n / 4 << "][" << n % 4 << "]";
    expect_values(v, c, file);
    ++checked;
  }
  EXPECT_EQ(checked, 6);
}

void expect_dicom_geometry(const RawVolume& v, const nlohmann::json& c, const std::string& what) {
  EXPECT_EQ(v.info.format, "dicom") << what;
  EXPECT_EQ(std::vector<int64_t>(v.size.begin(), v.size.end()), c["shape"].get<std::vector<int64_t>>()) << what;
  EXPECT_NEAR(v.geometry.spacing[0], c["spacing_xy"][0].get<double>(), 1e-6) << what;
  EXPECT_NEAR(v.geometry.spacing[1], c["spacing_xy"][1].get<double>(), 1e-6) << what;
  for (int r = 0; r < 3; ++r) EXPECT_NEAR(v.geometry.origin[r], c["origin_lps"][r].get<double>(), 1e-4) << what;
  const auto& columns = c["direction_columns"];
  for (size_t col = 0; col < columns.size(); ++col) {
    for (int r = 0; r < 3; ++r) EXPECT_NEAR(v.geometry.direction[r * 3 + col], columns[col][r].get<double>(), 1e-5) << what;
  }
  EXPECT_EQ(v.info.modality, c["modality"].get<std::string>()) << what;
  EXPECT_EQ(v.info.series_uid, c["series_uid"].get<std::string>()) << what;
}

TEST(VolumeRead, DicomFilesMatchPydicom) {
  for (const char* name : {"pydicom/CT_small.dcm", "pydicom/MR_small.dcm"}) {
    for (const auto& c : reference()["cases"]) {
      if (c["file"] != name) continue;
      const RawVolume v = volume_read(data_file(name));
      expect_dicom_geometry(v, c, name);
      expect_values(v, c, name);
    }
  }
}

// Lossless encodings of MR_small (RLE, JPEG-LS, JPEG 2000, big endian) decode to its voxels.
TEST(VolumeRead, CompressedDicomDecodesToTheSameVoxels) {
  nlohmann::json mr;
  for (const auto& c : reference()["cases"]) {
    if (c["file"] == "pydicom/MR_small.dcm") mr = c;
  }
  for (const char* name : {"MR_small_RLE.dcm", "MR_small_jpeg_ls_lossless.dcm", "MR_small_jp2klossless.dcm", "MR_small_bigendian.dcm"}) {
    const RawVolume v = volume_read(data_file(std::string("pydicom/") + name));
    expect_values(v, mr, name);
  }
}

TEST(VolumeRead, DicomSeriesSortedLikePydicom) {
  for (const auto& c : reference()["cases"]) {
    const std::string file = c["file"];
    if (!c.contains("slice_files")) continue;
    const RawVolume v = volume_read(data_file(file));
    expect_dicom_geometry(v, c, file);
    EXPECT_NEAR(v.geometry.spacing[2], c["spacing_z"].get<double>(), 1e-4) << file;
    EXPECT_EQ(v.info.warnings.empty(), c["uniform_spacing"].get<bool>()) << file;
    expect_values(v, c, file);
  }
}

TEST(VolumeRead, SeriesAreListedAndChosen) {
  const std::string dir = test::temp_dir();
  std::string small_uid, large_uid;
  for (const auto& c : reference()["cases"]) {
    if (!c.contains("slice_files")) continue;
    const std::string source = data_file(c["file"]);
    for (const auto& entry : fs::directory_iterator(source)) {
      fs::copy_file(entry.path(),
                    dir + "/" + c["file"].get<std::string>().substr(c["file"].get<std::string>().rfind('/') + 1) + "_" + entry.path().filename().string());
    }
    (c["slice_files"].get<int>() == 4 ? small_uid : large_uid) = c["series_uid"];
  }
  const auto series = dicom_series_list(dir);
  ASSERT_EQ(series.size(), 2u);
  EXPECT_EQ(series[0].uid, large_uid);
  EXPECT_EQ(series[0].files, 5);
  EXPECT_EQ(series[1].files, 4);
  EXPECT_EQ(volume_read(dir).size[2], 5);  // default: the largest series
  ReadOptions options;
  options.series = small_uid;
  EXPECT_EQ(volume_read(dir, options).size[2], 4);
  options.series = "1.2.3";
  test::expect_one_line_error([&] { volume_read(dir, options); }, dir, "no series '1.2.3'; the directory has: " + large_uid + " (5 files)");
}

TEST(VolumeWrite, NiftiAndNrrdRoundTripWithGeometry) {
  const RawVolume original = volume_read(data_file("nibabel/anatomical.nii"));
  const std::string dir = test::temp_dir();
  for (const char* name : {"a.nii.gz", "a.nii", "a.nrrd", "a.mha"}) {
    volume_write(dir + "/" + name, original);
    const RawVolume back = volume_read(dir + "/" + name);
    EXPECT_EQ(back.size, original.size) << name;
    EXPECT_EQ(back.dtype, original.dtype) << name;
    EXPECT_EQ(back.data, original.data) << name;
    for (int n = 0; n < 3; ++n) {
      EXPECT_NEAR(back.geometry.spacing[n], original.geometry.spacing[n], 1e-5) << name;
      EXPECT_NEAR(back.geometry.origin[n], original.geometry.origin[n], 1e-4) << name;
    }
    for (int n = 0; n < 9; ++n) EXPECT_NEAR(back.geometry.direction[n], original.geometry.direction[n], 1e-5) << name;
  }
  test::expect_one_line_error([&] { volume_write(dir + "/a.png", original); }, dir + "/a.png", "write .nii, .nii.gz, .nrrd or .mha");
}

TEST(Geometry, IndexToPhysicalMatchesTheAffine) {
  Geometry g;
  g.spacing = {0.7, 0.8, 2.5};
  g.origin = {-100, 50, 30};
  g.direction = {0, 0, 1, 1, 0, 0, 0, -1, 0};  // i -> P... an oblique-free permutation
  const auto p = g.index_to_physical({10, 20, 3});
  EXPECT_NEAR(p[0], -100 + 2.5 * 3, 1e-9);
  EXPECT_NEAR(p[1], 50 + 0.7 * 10, 1e-9);
  EXPECT_NEAR(p[2], 30 - 0.8 * 20, 1e-9);
  const auto back = g.physical_to_index(p);
  EXPECT_NEAR(back[0], 10, 1e-9);
  EXPECT_NEAR(back[1], 20, 1e-9);
  EXPECT_NEAR(back[2], 3, 1e-9);
  EXPECT_EQ(g.axcodes(), "PIL");
  EXPECT_EQ(Geometry{}.axcodes(), "LPS");
}

// Copies anatomical.nii with `patch` applied to its bytes.
std::string patched_nifti(const std::string& name, const std::function<void(std::vector<uint8_t>&)>& patch) {
  auto bytes = test::read_bytes(data_file("nibabel/anatomical.nii"));
  patch(bytes);
  const std::string path = test::temp_dir() + "_" + name;
  test::write_bytes(path, bytes);
  return path;
}

TEST(VolumeRead, BadInputIsAClearError) {
  const std::string dir = test::temp_dir();
  test::expect_one_line_error([&] { volume_read(dir + "/absent.nii"); }, dir + "/absent.nii", "no such file or directory");
  std::ofstream(dir + "/text.nii") << "this is not an image at all";
  test::expect_one_line_error([&] { volume_read(dir + "/text.nii"); }, dir + "/text.nii", "too short for a NIfTI header");
  std::ofstream(dir + "/long.nii") << std::string(400, 'x');
  test::expect_one_line_error([&] { volume_read(dir + "/long.nii"); }, dir + "/long.nii", "not a NIfTI file (sizeof_hdr is");
  std::ofstream(dir + "/notes.json") << "{}";
  test::expect_one_line_error([&] { volume_read(dir + "/notes.json"); }, dir + "/notes.json", "not a medical image m3d can read");
  // Truncated gzip.
  auto gz = test::read_bytes(data_file("nibabel/example4d.nii.gz"));
  gz.resize(gz.size() / 2);
  test::write_bytes(dir + "/cut.nii.gz", gz);
  test::expect_one_line_error([&] { volume_read(dir + "/cut.nii.gz"); }, dir + "/cut.nii.gz", "truncated");
  // Header fields: dim[1] = 0, pixdim[1] = -1 and NaN, and a voxel count beyond the limit.
  const std::string zero = patched_nifti("zero.nii", [](auto& b) { b[42] = 0, b[43] = 0; });
  test::expect_one_line_error([&] { volume_read(zero); }, zero, "dimension 1 has size 0");
  auto set_pixdim = [](float value) {
    return [value](std::vector<uint8_t>& b) {  // anatomical.nii is big-endian
      std::memcpy(b.data() + 80, &value, 4);
      if (b[0] == 0) std::reverse(b.begin() + 80, b.begin() + 84);
    };
  };
  const std::string negative = patched_nifti("neg.nii", set_pixdim(-1.0f));
  const RawVolume flipped = volume_read(negative);  // NIfTI readers take |pixdim| (nibabel too)
  EXPECT_GT(flipped.geometry.spacing[0], 0);
  auto without_sform = [&](float value) {  // the voxel sizes then come from pixdim
    return [set = set_pixdim(value)](std::vector<uint8_t>& b) {
      set(b);
      b[254] = b[255] = 0;  // sform_code = 0
    };
  };
  for (const float bad : {-1.0f, 0.0f}) {
    const std::string path = patched_nifti(bad < 0 ? "qneg.nii" : "qzero.nii", without_sform(bad));
    test::expect_one_line_error([&] { volume_read(path); }, path, "pixdim[1] = " + std::to_string(static_cast<int>(bad)) + " is not a positive voxel size");
  }
  const std::string nan = patched_nifti("nan.nii", set_pixdim(NAN));
  test::expect_one_line_error([&] { volume_read(nan); }, nan, "pixdim[1] = nan is not a number");
  ReadOptions small;
  small.max_voxels = 1000;
  const std::string anatomical = data_file("nibabel/anatomical.nii");
  test::expect_one_line_error([&] { volume_read(anatomical, small); }, anatomical, "33825 voxels exceed the limit of 1000");
  // DICOM folders: no image series, mixed slice sizes.
  const std::string no_images = dir + "/no_images";
  fs::create_directories(no_images);
  fs::copy_file(data_file("pydicom/rtplan.dcm"), no_images + "/rtplan.dcm");
  test::expect_one_line_error([&] { volume_read(no_images); }, no_images, "no DICOM image series in this directory");
  const std::string mixed = test::fixture("volumes/mixed_size_series");
  test::expect_one_line_error([&] { volume_read(mixed); }, mixed, "mixes slice sizes");
  // .npy: not a volume, booleans.
  const std::string flat = test::fixture("io/npy_i16.npy");
  test::expect_one_line_error([&] { volume_read(flat); }, flat, "expected a D x H x W array");
  const std::string booleans = test::fixture("io/npy_bool.npy");
  test::expect_one_line_error([&] { volume_read(booleans); }, booleans, "");
}

// Every gzip member's CRC-32 and length are checked: a flipped bit anywhere in the
// compressed voxels is an error, never a volume with changed values.
TEST(VolumeRead, DamagedGzipIsAnErrorAndEveryMemberIsRead) {
  const std::string original_path = data_file("nibabel/standard.nii.gz");
  const RawVolume original = volume_read(original_path);
  const auto gz = test::read_bytes(original_path);
  const std::string dir = test::temp_dir();
  for (const size_t at : {gz.size() / 3, gz.size() / 2, gz.size() - 30, gz.size() - 9}) {
    auto damaged = gz;
    damaged[at] ^= 0x10;
    const std::string path = dir + "/flip" + std::to_string(at) + ".nii.gz";
    test::write_bytes(path, damaged);
    test::expect_one_line_error([&] { volume_read(path); }, path, "gzip");
  }
  // Two members (the second empty, as `cat a.gz b.gz` makes): the same volume.
  const std::vector<uint8_t> empty_member = {0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0};
  auto two = gz;
  two.insert(two.end(), empty_member.begin(), empty_member.end());
  test::write_bytes(dir + "/two.nii.gz", two);
  EXPECT_EQ(volume_read(dir + "/two.nii.gz").data, original.data);
  auto garbage = gz;
  garbage.insert(garbage.end(), {'j', 'u', 'n', 'k'});
  test::write_bytes(dir + "/garbage.nii.gz", garbage);
  test::expect_one_line_error([&] { volume_read(dir + "/garbage.nii.gz"); }, dir + "/garbage.nii.gz", "after the end of the gzip stream");
}

// Writes go to a temporary sibling and are renamed into place only when complete and
// read back: a failed write leaves neither the file nor a temporary behind.
TEST(VolumeWrite, FailedWritesAreErrorsAndLeaveNothing) {
  const RawVolume original = volume_read(data_file("nibabel/anatomical.nii"));
  const std::string dir = test::temp_dir();
  test::expect_one_line_error([&] { volume_write(dir + "/missing/a.nii.gz", original); }, dir + "/missing/a.nii.gz", "does not exist");
  fs::create_directories(dir + "/taken.nii.gz");  // the target name is a directory: the rename fails
  test::expect_one_line_error([&] { volume_write(dir + "/taken.nii.gz", original); }, dir + "/taken.nii.gz", "");
  test::expect_one_line_error([&] { png_write(dir + "/missing/a.png", 2, 1, {0, 255}); }, dir + "/missing/a.png", "does not exist");
  std::vector<std::string> left;
  for (const auto& entry : fs::directory_iterator(dir)) left.push_back(entry.path().filename().string());
  EXPECT_EQ(left, std::vector<std::string>{"taken.nii.gz"});
}

// Real JPEG slices (baseline, progressive, restart markers; Pillow's libjpeg) pass the
// guard and decode to Pillow's pixels; damaged PNG/JPEG files are clear errors before
// libpng or ITK's probes see them (a truncated PNG used to abort, a short JPEG to crash).
TEST(VolumeRead, SliceImagesAreCheckedBeforeDecoding) {
  const nlohmann::json want = test::read_json(test::fixture("volumes/jpeg_slices.json"));
  const RawVolume jpeg = volume_read(test::fixture("volumes/jpeg_slices"));
  ASSERT_EQ(jpeg.size, (std::array<int64_t, 3>{want["width"], want["height"], 3}));
  const int64_t plane = jpeg.size[0] * jpeg.size[1];
  for (int64_t k = 0; k < 3; ++k) {
    double sum = 0;
    for (int64_t n = 0; n < plane; ++n) sum += jpeg.data[k * plane + n];
    EXPECT_NEAR(sum / plane, want["slice_means"][k].get<double>(), 0.5) << "slice " << k + 1;
  }
  const std::string dir = test::temp_dir();
  const auto png = test::read_bytes(test::fixture("volumes/m3d_cap_slices/1.png"));
  const auto jpg = test::read_bytes(test::fixture("volumes/jpeg_slices/1.jpg"));
  struct Case {
    std::string name;
    std::vector<uint8_t> bytes;
    std::string fragment;
  };
  std::vector<Case> cases = {
      {"cut.png", std::vector<uint8_t>(png.begin(), png.begin() + png.size() / 2), "truncated PNG"},
      {"flip.png", png, "fails its CRC"},
      {"header.jpg", std::vector<uint8_t>(jpg.begin(), jpg.begin() + 11), "truncated JPEG"},
      {"cut.jpg", std::vector<uint8_t>(jpg.begin(), jpg.end() - 100), "truncated JPEG"},
      {"text.png", {'h', 'e', 'l', 'l', 'o'}, "not a PNG file"},
  };
  cases[1].bytes[png.size() / 2] ^= 0x01;
  for (const auto& c : cases) {
    const std::string folder = dir + "/" + c.name + "_dir";
    fs::create_directories(folder);
    test::write_bytes(folder + "/1" + fs::path(c.name).extension().string(), c.bytes);
    test::expect_one_line_error([&] { volume_read(folder); }, folder + "/1" + fs::path(c.name).extension().string(), c.fragment);
    test::write_bytes(dir + "/" + c.name, c.bytes);  // a single file, as `--image` takes it
    test::expect_one_line_error([&] { volume_read(dir + "/" + c.name); }, dir + "/" + c.name, c.fragment);
  }
  auto renamed = std::vector<uint8_t>(jpg.begin(), jpg.begin() + 11);  // JPEG bytes under another name
  test::write_bytes(dir + "/scan.dat", renamed);
  test::expect_one_line_error([&] { volume_read(dir + "/scan.dat"); }, dir + "/scan.dat", "truncated JPEG");
}

// DICOM that ITK would read silently wrong (tools/reference/make_bad_dicom.py): short
// uncompressed pixel data (zero-filled by ITK), slices with repeated or missing positions
// (ITK invents a 1 mm spacing).
TEST(VolumeRead, DamagedDicomIsAClearError) {
  const std::string short_pixels = test::fixture("volumes/bad_dicom/short_pixels.dcm");
  test::expect_one_line_error([&] { volume_read(short_pixels); }, short_pixels, "pixel data holds 16384 bytes");
  const std::string dir = test::temp_dir();
  fs::copy_file(short_pixels, dir + "/a.dcm");
  test::expect_one_line_error([&] { volume_read(dir); }, dir + "/a.dcm", "pixel data holds 16384 bytes");
  const std::string duplicates = test::fixture("volumes/bad_dicom/duplicate_positions");
  test::expect_one_line_error([&] { volume_read(duplicates); }, duplicates, "share ImagePositionPatient");
  const std::string missing = test::fixture("volumes/bad_dicom/missing_position");
  test::expect_one_line_error([&] { volume_read(missing); }, missing, "without ImagePositionPatient");
}

// m3d's own PNG encoder: ITK's PNG reader (a slice folder) reads back the same pixels.
TEST(VolumeWrite, PngReadsBackThroughItk) {
  const std::string dir = test::temp_dir() + "/slices";
  fs::create_directories(dir);
  const int64_t width = 37, height = 5;
  std::vector<uint8_t> grey(width * height);
  for (size_t n = 0; n < grey.size(); ++n) grey[n] = static_cast<uint8_t>(n * 7 % 256);
  png_write(dir + "/0.png", width, height, grey);
  png_write(dir + "/1.png", width, height, grey);
  const RawVolume back = volume_read(dir);
  ASSERT_EQ(back.size, (std::array<int64_t, 3>{width, height, 2}));
  ASSERT_EQ(back.data.size(), grey.size() * 2 * dtype_size(back.dtype));
  for (int64_t y = 0; y < height; ++y) {
    for (int64_t x = 0; x < width; ++x) EXPECT_EQ(voxel(back, x, y, 1), grey[y * width + x]) << x << "," << y;
  }
}

TEST(VolumeRead, NpyIsDepthHeightWidthWithUnitGeometry) {
  const RawVolume v = volume_read(test::fixture("io/npy_image_f32.npy"));  // 1 x 4 x 5 x 6
  EXPECT_EQ(v.info.format, "npy");
  EXPECT_EQ(v.size, (std::array<int64_t, 3>{6, 5, 4}));
  EXPECT_EQ(v.dtype, DType::F32);
  EXPECT_EQ(v.geometry.spacing, (std::array<double, 3>{1, 1, 1}));
  EXPECT_EQ(v.geometry.axcodes(), "LPS");
  const std::string empty = test::temp_dir() + "/empty.npy";  // a zero-length dimension: one line, not a libtorch backtrace
  io::npy_write(empty, DType::F32, {1, 0, 256, 256}, nullptr);
  test::expect_one_line_error([&] { volume_read(empty); }, empty, "empty volume (shape [1, 0, 256, 256])");
}

}  // namespace
}  // namespace m3d::imaging

namespace m3d::imaging {
namespace {

// Uncompressed MetaImage and NRRD payloads, attached or in a data file (compressed ones:
// tests/bad_inputs): ITK read a short one without a word; the header's sizes are now checked
// against the bytes first.
TEST(VolumeRead, ShortMetaImageAndNrrdPayloadsAreErrors) {
  const std::string dir = test::temp_dir();
  std::vector<uint8_t> voxels;
  for (int16_t v = 0; v < 24; ++v) voxels.insert(voxels.end(), {static_cast<uint8_t>(v), 0});  // little-endian int16 0..23
  const std::map<std::string, std::string> headers = {
      {".nrrd", "NRRD0004\ntype: short\ndimension: 3\nsizes: 4 3 2\nencoding: raw\nendian: little\n\n"},
      {".mha", "ObjectType = Image\nNDims = 3\nDimSize = 4 3 2\nElementType = MET_SHORT\nElementDataFile = LOCAL\n"}};
  for (const auto& [ext, header] : headers) {
    std::vector<uint8_t> bytes(header.begin(), header.end());
    bytes.insert(bytes.end(), voxels.begin(), voxels.end());
    test::write_bytes(dir + "/whole" + ext, bytes);
    const RawVolume whole = volume_read(dir + "/whole" + ext);
    EXPECT_EQ(whole.size, (std::array<int64_t, 3>{4, 3, 2})) << ext;
    EXPECT_EQ(whole.data, voxels) << ext;
    bytes.pop_back();
    test::write_bytes(dir + "/short" + ext, bytes);
    try {
      volume_read(dir + "/short" + ext);
      ADD_FAILURE() << ext << ": a short payload was read";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("truncated: the header's sizes need 48 bytes of voxels, the file holds 47"), std::string::npos) << e.what();
    }
  }
  // Detached headers (.mhd, .nhdr) and the data file they name.
  test::write_bytes(dir + "/voxels.raw", voxels);
  test::write_bytes(dir + "/short.raw", std::vector<uint8_t>(voxels.begin(), voxels.end() - 1));
  const std::map<std::string, std::string> detached = {
      {".nhdr", "NRRD0004\ntype: short\ndimension: 3\nsizes: 4 3 2\nencoding: raw\nendian: little\ndata file: "},
      {".mhd", "ObjectType = Image\nNDims = 3\nDimSize = 4 3 2\nElementType = MET_SHORT\nElementDataFile = "}};
  for (const auto& [ext, header] : detached) {
    for (const std::string data : {"voxels.raw", "short.raw", "missing.raw"}) {
      const std::string text = header + data + "\n", path = dir + "/" + data + ext;
      test::write_bytes(path, std::vector<uint8_t>(text.begin(), text.end()));
      if (data == "voxels.raw") {
        EXPECT_EQ(volume_read(path).data, voxels) << ext;
        continue;
      }
      try {
        volume_read(path);
        ADD_FAILURE() << path << " was read";
      } catch (const Error& e) {
        const std::string want = data == "short.raw" ? "(data file short.raw): truncated" : "data file " + dir + "/missing.raw does not exist";
        EXPECT_NE(std::string(e.what()).find(want), std::string::npos) << e.what();
      }
    }
  }
}

}  // namespace
}  // namespace m3d::imaging
