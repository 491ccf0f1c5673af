// Bad inputs to build/m3d, one test per class of issue #16: each builds its damaged
// input on the fly from a good file (a flipped gzip bit, a truncated PNG, an 11-byte
// JPEG, a .npy with a zero-length axis, a missing output folder, a used run folder, ...)
// and checks the process refuses it as the README promises: exit code 1, one stderr
// line "m3d: error: ..." naming the file or option, and no output file left behind.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <set>

#include "core/strings.h"
#include "test_support.h"

namespace m3d::test {
namespace {

namespace fs = std::filesystem;

const std::string kM3d = std::string(M3D_BINARY_DIR) + "/m3d";
const std::string kNibabel = "/usr/lib/python3/dist-packages/nibabel/tests/data";
const std::string kTextInit = std::string(M3D_SOURCE_DIR) + "/third_party/models/all-MiniLM-L6-v2";

// Every path under `dir`, to tell what a command left there.
std::set<std::string> listing(const std::string& dir) {
  std::set<std::string> paths;
  for (const auto& entry : fs::recursive_directory_iterator(dir)) paths.insert(entry.path().string());
  return paths;
}

// `m3d ARGS` must exit 1 with exactly one stderr line, "m3d: error: ...", that contains
// `named` (the file or option at fault) and `fragment`, and add nothing under `dir`.
// `runner` goes before the binary (e.g. setpriv to run as another user).
void expect_refused(const std::string& args, const std::string& dir, const std::string& named, const std::string& fragment, const std::string& runner = "") {
  const auto before = listing(dir);
  std::string out, err;
  EXPECT_EQ(run_command(runner + kM3d + " " + args, &out, &err), 1) << args << "\n" << err;
  EXPECT_EQ(err.rfind("m3d: error: ", 0), 0u) << args << "\n" << err;
  EXPECT_EQ(err.find('\n'), err.size() - 1) << "not one line: " << args << "\n" << err;
  EXPECT_NE(err.find(named), std::string::npos) << args << "\n" << err;
  EXPECT_NE(err.find(fragment), std::string::npos) << args << "\n" << err;
  const auto after = listing(dir);
  for (const auto& path : after) EXPECT_TRUE(before.count(path)) << args << " left " << path;
}

void flip_byte(const std::string& path, size_t at, uint8_t mask) {
  auto bytes = read_bytes(path);
  ASSERT_LT(at, bytes.size()) << path;
  bytes[at] ^= mask;
  write_bytes(path, bytes);
}

void truncate_to(const std::string& path, size_t size) {
  auto bytes = read_bytes(path);
  ASSERT_LT(size, bytes.size()) << path;
  bytes.resize(size);
  write_bytes(path, bytes);
}

// A synthetic M3D-Data set of 8 studies (`m3d synth`).
std::string synth_set(const std::string& dir) {
  const std::string data = dir + "/data";
  std::string out, err;
  EXPECT_EQ(run_command(kM3d + " synth --n 8 --seed 1 -j 2 -o " + data, &out, &err), 0) << err;
  return data;
}

// gzip's CRC-32 and length trailer and its deflate stream both catch one flipped bit.
TEST(BadInputs, NiftiGzWithAFlippedBitIsRefused) {
  const std::string dir = temp_dir(), good = dir + "/good.nii.gz";
  std::string out, err;
  ASSERT_EQ(run_command("gzip -c " + kNibabel + "/anatomical.nii > " + good, &out, &err), 0) << err;
  const size_t size = fs::file_size(good);
  for (const auto& [name, at] : std::vector<std::pair<std::string, size_t>>{{"data", size / 2}, {"crc", size - 6}}) {
    const std::string bad = dir + "/" + name + ".nii.gz";
    fs::copy_file(good, bad);
    flip_byte(bad, at, 0x10);
    expect_refused("volume info " + bad, dir, bad, "corrupt gzip data");
    expect_refused("volume prep " + bad + " --recipe m3d-lamed -o " + dir + "/x.npy --map " + dir + "/map.json", dir, bad, "corrupt gzip data");
  }
}

TEST(BadInputs, TruncatedNiftiIsRefused) {
  const std::string dir = temp_dir(), bad = dir + "/half.nii";
  fs::copy_file(kNibabel + "/anatomical.nii", bad);
  truncate_to(bad, fs::file_size(bad) / 2);
  expect_refused("volume info " + bad, dir, bad, "truncated");
  expect_refused("volume prep " + bad + " --recipe m3d-lamed -o " + dir + "/x.npy", dir, bad, "truncated");
}

// libpng used to abort the process ("Read Error", rc 134) on these.
TEST(BadInputs, DamagedPngInASliceFolderIsRefused) {
  const std::string dir = temp_dir();
  const std::string truncated = dir + "/truncated", flipped = dir + "/flipped";
  fs::copy(fixture("volumes/m3d_cap_slices"), truncated, fs::copy_options::recursive);
  fs::copy(fixture("volumes/m3d_cap_slices"), flipped, fs::copy_options::recursive);
  truncate_to(truncated + "/5.png", fs::file_size(truncated + "/5.png") / 2);
  flip_byte(flipped + "/5.png", 200, 0xff);
  expect_refused("volume info " + truncated, dir, truncated + "/5.png", "truncated PNG");
  expect_refused("volume prep " + truncated + " --recipe m3d-lamed -o " + dir + "/x.npy", dir, truncated + "/5.png", "truncated PNG");
  expect_refused("volume info " + flipped, dir, flipped + "/5.png", "damaged PNG");
}

// ITK's JPEG reader used to segfault on an 11-byte header, also behind generate --image.
TEST(BadInputs, ElevenByteJpegIsRefused) {
  const std::string dir = temp_dir(), folder = dir + "/slices", single = dir + "/eleven.jpg";
  fs::copy(fixture("volumes/jpeg_slices"), folder, fs::copy_options::recursive);
  truncate_to(folder + "/2.jpg", 11);
  fs::copy_file(folder + "/2.jpg", single);
  expect_refused("volume info " + folder, dir, folder + "/2.jpg", "truncated JPEG");
  expect_refused("volume info " + single, dir, single, "truncated JPEG");
  expect_refused("generate --model " + fixture("lamed_phi3_tiny") + " --image " + single + " --prompt hi --max-new-tokens 2", dir, single, "truncated JPEG");
}

// DICOM that ITK reads silently wrong (tests/fixtures/volumes/bad_dicom, tools/reference/make_bad_dicom.py).
TEST(BadInputs, DicomWithShortPixelsOrAmbiguousGeometryIsRefused) {
  const std::string dir = temp_dir();
  const std::string short_pixels = fixture("volumes/bad_dicom/short_pixels.dcm");
  const std::string duplicates = fixture("volumes/bad_dicom/duplicate_positions");
  const std::string missing = fixture("volumes/bad_dicom/missing_position");
  expect_refused("volume prep " + short_pixels + " --recipe m3d-lamed -o " + dir + "/x.npy", dir, short_pixels, "pixel data holds 16384 bytes");
  expect_refused("volume prep " + duplicates + " --recipe m3d-lamed -o " + dir + "/x.npy", dir, duplicates, "share ImagePositionPatient");
  expect_refused("volume prep " + missing + " --recipe m3d-lamed -o " + dir + "/x.npy", dir, missing + "/slice1.dcm", "without ImagePositionPatient");
}

// libtorch used to stop with a backtrace and exit 2 on this.
TEST(BadInputs, NpyWithAZeroLengthAxisIsRefused) {
  const std::string dir = temp_dir(), bad = dir + "/empty.npy";
  std::string header = "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 1, 0, 256, 256), }";
  header += std::string(127 - 10 - header.size(), ' ') + "\n";  // magic, version and length make the header 128 bytes
  const std::string bytes = std::string("\x93NUMPY\x01\x00", 8) + static_cast<char>(header.size()) + '\0' + header;
  write_bytes(bad, {bytes.begin(), bytes.end()});
  const std::string model = fixture("lamed_phi3_tiny");
  expect_refused("volume info " + bad, dir, bad, "empty volume");
  expect_refused("generate --model " + model + " --image " + bad + " --prompt hi --max-new-tokens 2", dir, bad, "empty volume");
  expect_refused("encode --model " + model + " --image " + bad + " -o " + dir + "/tokens.safetensors", dir, bad, "empty volume");
}

// NIfTI, MHA and .npy writes into a missing folder used to print the success line.
TEST(BadInputs, OutputIntoAMissingFolderIsRefused) {
  const std::string dir = temp_dir(), scan = kNibabel + "/anatomical.nii", missing = dir + "/missing";
  for (const std::string name : {"x.nii.gz", "x.nii", "x.mha", "x.npy"}) {
    expect_refused("volume prep " + scan + " --recipe m3d-lamed -o " + missing + "/" + name, dir, missing + "/" + name, "does not exist");
  }
  // A preview or map that cannot be written: the main output is not written either.
  expect_refused("volume prep " + scan + " --recipe m3d-lamed -o " + dir + "/ok.npy --preview " + missing + "/p.png", dir, missing + "/p.png",
                 "does not exist");
  expect_refused("volume prep " + scan + " --recipe m3d-lamed -o " + dir + "/ok.npy --map " + missing + "/m.json", dir, missing + "/m.json", "does not exist");
  std::string out, err;
  ASSERT_EQ(run_command(kM3d + " volume prep " + scan + " --recipe m3d-lamed -o " + dir + "/x.npy --map " + dir + "/map.json", &out, &err), 0) << err;
  expect_refused("volume back --map " + dir + "/map.json --mask " + dir + "/x.npy -o " + missing + "/back.nii.gz", dir, missing + "/back.nii.gz",
                 "does not exist");
}

// Root ignores file permissions, so as root (CI) m3d runs as the unprivileged user 65534
// (setpriv, util-linux) on a folder that user owns without write permission.
TEST(BadInputs, OutputIntoAReadOnlyFolderIsRefused) {
  const std::string dir = temp_dir(), locked = dir + "/locked", scan = kNibabel + "/anatomical.nii";
  fs::create_directories(locked);
  const bool root = ::geteuid() == 0;
  if (root) { ASSERT_EQ(::chown(locked.c_str(), 65534, 65534), 0) << locked; }
  fs::permissions(
      locked, fs::perms::owner_read | fs::perms::owner_exec | fs::perms::group_read | fs::perms::group_exec | fs::perms::others_read | fs::perms::others_exec);
  const std::string runner = root ? "setpriv --reuid=65534 --regid=65534 --clear-groups " : "";
  std::string out, err;
  if (root && run_command(runner + kM3d + " volume info " + scan, &out, &err) != 0) {
    GTEST_SKIP() << "user 65534 cannot run m3d on the fixtures here (the checkout's folder permissions): " << err;
  }
  // Every format names the OS reason (a .nii.gz used to say "the writer produced no file",
  // an .mha ITK's own text).
  for (const std::string name : {"x.nii.gz", "x.nii", "x.mha", "x.nrrd", "x.npy"}) {
    expect_refused("volume prep " + scan + " --recipe m3d-lamed -o " + locked + "/" + name, dir, locked + "/" + name, "cannot write: Permission denied",
                   runner);
  }
  fs::permissions(locked, fs::perms::owner_all);
}

TEST(BadInputs, DamagedCheckpointsAreRefused) {
  const std::string dir = temp_dir(), model = dir + "/model";
  fs::copy(fixture("lamed_phi3_tiny"), model, fs::copy_options::recursive);
  truncate_to(model + "/model.safetensors", fs::file_size(model + "/model.safetensors") - 1000);
  expect_refused("inspect " + model, dir, model + "/model.safetensors", "truncated file?");
  expect_refused("generate --model " + model + " --prompt hi --max-new-tokens 2", dir, model + "/model.safetensors", "truncated file?");

  // A flipped bit inside a .bin (torch zip) entry: --verify checks the entry's CRC-32.
  const std::string bin = dir + "/state.bin", entry = "torch_state/data/1";
  fs::copy_file(fixture("io/torch_state.bin"), bin);
  const auto bytes = read_bytes(bin);
  const auto name = std::search(bytes.begin(), bytes.end(), entry.begin(), entry.end());  // the local header's copy comes first
  ASSERT_NE(name, bytes.end());
  const size_t header = (name - bytes.begin()) - 30;  // zip local file header: 30 fixed bytes, then name and extra field
  const size_t data = header + 30 + (bytes[header + 26] | bytes[header + 27] << 8) + (bytes[header + 28] | bytes[header + 29] << 8);
  flip_byte(bin, data + 5, 0x04);
  expect_refused("inspect --verify " + bin, dir, bin, "zip entry 'torch_state/data/1': CRC-32");
  expect_refused("inspect " + bin, dir, bin, "zip entry 'torch_state/data/1': CRC-32");
}

// ITK's MetaImage and NRRD readers took a truncated or bit-flipped compressed payload with
// exit 0 (NaN or garbage voxels), and printed their own multi-line errors on a bad header.
TEST(BadInputs, DamagedMetaImageAndNrrdAreRefused) {
  const std::string dir = temp_dir(), scan = kNibabel + "/anatomical.nii";
  std::string out, err;
  for (const std::string ext : {".mha", ".nrrd"}) {
    const std::string good = dir + "/good" + ext, truncated = dir + "/truncated" + ext, flipped = dir + "/flipped" + ext;
    ASSERT_EQ(run_command(kM3d + " volume prep " + scan + " --recipe m3d-lamed -o " + good, &out, &err), 0) << err;
    fs::copy_file(good, truncated);
    truncate_to(truncated, fs::file_size(good) / 2);
    fs::copy_file(good, flipped);
    flip_byte(flipped, fs::file_size(good) / 2, 0x10);
    expect_refused("volume info " + truncated, dir, truncated, "truncated");
    expect_refused("volume prep " + truncated + " --recipe m3d-lamed -o " + dir + "/x.npy", dir, truncated, "truncated");
    expect_refused("volume info " + flipped, dir, flipped, "damaged");
  }
  // A header MetaIO cannot parse: its first line, not ITK's text or MetaIO's own lines.
  const auto bytes = read_bytes(dir + "/good.mha");
  const std::string bad = dir + "/no_size.mha", text = replace_all(std::string(bytes.begin(), bytes.end()), "DimSize =", "Dim_Size =");
  write_bytes(bad, std::vector<uint8_t>(text.begin(), text.end()));
  expect_refused("volume info " + bad, dir, bad, "cannot read the image: DimSize required and not defined");
}

// A truncated tokenizer.model was reported as "Unigram not supported"; an
// adapter_config.json of the wrong type named neither file nor key.
TEST(BadInputs, DamagedModelSideFilesAreNamed) {
  const std::string dir = temp_dir(), slow = dir + "/slow", lora = dir + "/lora";
  fs::copy(fixture("lamed_phi3_tiny"), slow, fs::copy_options::recursive);
  fs::remove(slow + "/tokenizer.json");
  fs::copy_file(fixture("tokenizers/tiny_lamed_slow/tokenizer_config.json"), slow + "/tokenizer_config.json");
  fs::copy_file(fixture("tokenizers/tiny_lamed_slow/tokenizer.model"), slow + "/tokenizer.model");
  truncate_to(slow + "/tokenizer.model", 300);
  expect_refused("generate --model " + slow + " --prompt hi --max-new-tokens 2", dir, slow + "/tokenizer.model", "truncated");

  fs::copy(fixture("lamed_phi3_tiny"), lora, fs::copy_options::recursive);
  fs::copy(fixture("lora/adapter"), lora + "/adapter");
  auto config = read_json(lora + "/adapter/adapter_config.json");
  config["r"] = "four";
  const std::string text = config.dump();
  write_bytes(lora + "/adapter/adapter_config.json", {text.begin(), text.end()});
  expect_refused("export --merge-lora " + lora + " -o " + dir + "/merged", dir, lora + "/adapter/adapter_config.json", "key 'r'");
}

// save_steps=0 used to die with SIGFPE; --resume with nothing to resume started afresh;
// a second run into a used folder appended to the old run's log.
TEST(BadInputs, TrainingRunsAreNotMixedUp) {
  const std::string dir = temp_dir(), data = synth_set(dir);
  const std::string train = "train clip -q --preset tiny --data " + data + " --text-init " + kTextInit +
                            " --set batch_size=2 --set eval_split='\"\"' --set eval_fraction=0 --max-steps 1";
  const std::string longer = train.substr(0, train.size() - 1) + "2";  // --max-steps 2
  expect_refused(train + " --set save_steps=0 -o " + dir + "/run", dir, "save_steps", "must be at least 1");
  expect_refused(train + " --set log_steps=0 -o " + dir + "/run", dir, "log_steps", "must be at least 1");
  expect_refused(train + " --resume -o " + dir + "/run", dir, dir + "/run", "no complete checkpoint");

  std::string out, err;
  ASSERT_EQ(run_command(kM3d + " " + train + " -o " + dir + "/run", &out, &err), 0) << err;
  const auto log = read_bytes(dir + "/run/metrics.jsonl");
  expect_refused(train + " -o " + dir + "/run", dir, dir + "/run", "holds another run's files");
  expect_refused(train + " --set lr=0.5 --resume -o " + dir + "/run", dir, dir + "/run/checkpoint-1", "changed: lr");
  expect_refused(longer + " --set lr=0.5 --resume -o " + dir + "/run", dir, dir + "/run/checkpoint-1", "changed: lr");
  EXPECT_EQ(read_bytes(dir + "/run/metrics.jsonl"), log);
  // A longer run is a normal continuation, and the log says the schedule changed.
  ASSERT_EQ(run_command(kM3d + " " + longer + " --resume -o " + dir + "/run", &out, &err), 0) << err;
  EXPECT_NE(err.find("the schedule is extended from 1 to 2 steps"), std::string::npos) << err;
  EXPECT_TRUE(fs::exists(dir + "/run/checkpoint-2/model.safetensors"));
}

// A synth run stopped midway (here by SIGKILL; a full disk: CliVolume.FullDiskIsAnErrorAndLeavesNothing)
// used to leave a folder of studies beside the previous set's indexes: the set is now built
// in OUT.partial, so OUT stays the previous, complete set until the new one replaces it.
TEST(BadInputs, SynthStoppedMidwayLeavesThePreviousSet) {
  const std::string dir = temp_dir(), set = dir + "/set", other = dir + "/other";
  std::string out, err;
  ASSERT_EQ(run_command(kM3d + " synth --n 2 --seed 1 -o " + set, &out, &err), 0) << err;
  const auto index = read_bytes(set + "/M3D_Cap_npy/M3D_Cap.json");
  const auto before = listing(set);
  EXPECT_NE(run_command("timeout -s KILL 3 " + kM3d + " synth --n 400 --seed 2 -j 1 -o " + set, &out, &err), 0) << "finished within 3 s";
  EXPECT_EQ(listing(set), before);
  EXPECT_EQ(read_bytes(set + "/M3D_Cap_npy/M3D_Cap.json"), index);
  ASSERT_EQ(run_command(kM3d + " synth --n 1 --seed 3 -o " + set, &out, &err), 0) << err;  // replaces the set and the killed run's leftovers
  EXPECT_FALSE(fs::exists(set + ".partial"));
  EXPECT_NE(read_bytes(set + "/M3D_Cap_npy/M3D_Cap.json"), index);
  fs::create_directories(other);
  write_bytes(other + "/notes.txt", {'h', 'i'});
  expect_refused("synth --n 1 -o " + other, dir, other, "not an m3d synth set");
}

// A bench folder of another predictor or setting used to be resumed as this run's.
TEST(BadInputs, BenchFolderOfAnotherRunIsRefused) {
  const std::string dir = temp_dir(), data = synth_set(dir), bench = dir + "/bench";
  const std::string args = "bench --data " + data + " --task report --split train --limit 2 -o " + bench;
  std::string out, err;
  ASSERT_EQ(run_command(kM3d + " " + args + " --predictor oracle", &out, &err), 0) << err;
  const auto predictions = read_bytes(bench + "/predictions.csv");
  expect_refused(args + " --predictor constant", dir, bench, "different predictor");
  expect_refused(args + " --predictor oracle --max-new-tokens 5", dir, bench, "different max_new_tokens");
  EXPECT_EQ(read_bytes(bench + "/predictions.csv"), predictions);
}

TEST(BadInputs, OutOfRangeSettingsAreRefused) {
  const std::string dir = temp_dir(), model = fixture("lamed_phi3_tiny");
  const std::string generate = "generate --model " + model + " --prompt hi ";
  expect_refused(generate + "--repetition-penalty 0", dir, "repetition_penalty", "got 0");
  // Typed on the command line, a setting out of range is refused with or without --do-sample.
  for (const std::string sample : {"", "--do-sample "}) {
    expect_refused(generate + sample + "--top-p -1", dir, "--top-p", "-1");
    expect_refused(generate + sample + "--temperature -1", dir, "--temperature", "-1");
    expect_refused(generate + sample + "--top-k -1", dir, "--top-k", "-1");
  }
  expect_refused(generate + "--max-new-tokens -2", dir, "--max-new-tokens", "-2");
  expect_refused(generate + "--max-new-tokens 100000000000", dir, "100000000000 new tokens", "exceeds the model's context");

  std::string out, err;
  ASSERT_EQ(run_command(kM3d + " volume prep " + kNibabel + "/anatomical.nii --recipe m3d-lamed -o " + dir + "/x.npy --map " + dir + "/map.json", &out, &err),
            0)
      << err;
  expect_refused("volume back --map " + dir + "/map.json --box '[0.6,0.1,0.1,0.2,0.5,0.5]'", dir, "--box", "may not exceed");

  // -t beyond the CPUs is capped with a warning, not oversubscribed.
  EXPECT_EQ(run_command(kM3d + " -t 1000 volume info " + kNibabel + "/anatomical.nii", &out, &err), 0) << err;
  EXPECT_NE(err.find("1000 threads requested but this process may use"), std::string::npos) << err;
}

// CLI11's own usage errors used to exit 104-109 without the m3d prefix.
TEST(BadInputs, UsageErrorsExitOne) {
  const std::string dir = temp_dir();
  expect_refused("volume info --frobnicate " + kNibabel + "/anatomical.nii", dir, "--frobnicate", "not expected");
  expect_refused("generate --model", dir, "--model", "missing");
  expect_refused("", dir, "subcommand", "required");
}

}  // namespace
}  // namespace m3d::test
