// `m3d serve` end to end over HTTP on loopback, with the tiny LaMed fixture and
// nibabel's anatomical.nii: the study's geometry is nibabel's; a greedy chat answer,
// streamed and not, equals `m3d generate`'s; studies survive a restart; bad requests
// get the documented status with a JSON error and leave nothing on disk; the API key
// guards /v1/. Segmentation (prompt, box, points; NIfTI and DICOM-SEG) equals `m3d segment`'s;
// a zipped DICOM series is its series, and unsafe or oversized zips are refused.
#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <thread>
#include <tuple>

#include "imaging/dicom_seg.h"
#include "imaging/volume_io.h"
#include "io/checkpoint.h"
#include "io/safetensors.h"
#include "test_support.h"

namespace m3d::test {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

const std::string kM3d = std::string(M3D_BINARY_DIR) + "/m3d";
const std::string kScan = "/usr/lib/python3/dist-packages/nibabel/tests/data/anatomical.nii";
// The tiny fixture answers these with text that tells them apart ("cVVV...", "VVV...";
// most other prompts decode to byte tokens, U+FFFD alike whatever the tokens).
const std::string kQuestion = "Where is it?";
const std::string kSecondQuestion = "hello";

std::string model_dir() { return fixture("lamed_phi3_tiny"); }

// A port nothing listens on now: the kernel's pick for port 0.
int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof(address);
  EXPECT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)), 0);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length);
  ::close(fd);
  return ntohs(address.sin_port);
}

// A running `m3d serve` child process, stopped (SIGTERM, then SIGKILL) when destroyed.
class Server {
 public:
  Server(const std::string& data_dir, const std::vector<std::string>& extra = {}, const std::string& model = model_dir())
      : port_(free_port()), log_(data_dir + ".log") {
    std::vector<std::string> args = {kM3d, "serve", "--model", model, "--port", std::to_string(port_), "--data-dir", data_dir};
    args.insert(args.end(), extra.begin(), extra.end());
    pid_ = ::fork();
    if (pid_ == 0) {
      const int fd = ::open(log_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      ::dup2(fd, 1);
      ::dup2(fd, 2);
      ::unsetenv("M3D_API_KEY");
      std::vector<char*> argv;
      for (auto& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      ::execv(argv[0], argv.data());
      ::_exit(127);
    }
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (std::chrono::steady_clock::now() < until && !ready_) {
      int status = 0;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        break;
      }
      const auto res = client().Get("/health");
      ready_ = res && res->status == 200;
      if (!ready_) std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    EXPECT_TRUE(ready_) << "m3d serve did not answer /health; its log:\n" << log();
  }
  ~Server() { stop(); }
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // SIGTERM and wait; the exit status (-1 when it had to be killed).
  int stop() {
    if (pid_ <= 0) return -1;
    ::kill(pid_, SIGTERM);
    int status = 0;
    for (int i = 0; i < 100; ++i) {
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, &status, 0);
    pid_ = -1;
    return -1;
  }
  httplib::Client client() const {
    httplib::Client c("127.0.0.1", port_);
    c.set_read_timeout(60, 0);
    return c;
  }
  bool ready() const { return ready_; }
  std::string log() const {
    const auto bytes = read_bytes(log_);
    return std::string(bytes.begin(), bytes.end());
  }

 private:
  int port_;
  std::string log_;
  pid_t pid_ = -1;
  bool ready_ = false;
};

std::string file_text(const std::string& path) {
  const auto bytes = read_bytes(path);
  return std::string(bytes.begin(), bytes.end());
}

json body_of(const httplib::Result& res) { return res ? json::parse(res->body, nullptr, false) : json(); }

json upload(const Server& server, const std::string& path, const std::string& filename) {
  const auto res = server.client().Post(("/v1/studies?filename=" + filename).c_str(), file_text(path), "application/octet-stream");
  EXPECT_TRUE(res && res->status == 201) << (res ? res->body : "no response");
  return body_of(res);
}

json chat_request(const std::string& study, const std::string& question, bool stream) {
  const json content = {{{"type", "image_url"}, {"image_url", {{"url", "m3d://studies/" + study}}}}, {{"type", "text"}, {"text", question}}};
  return {{"model", "lamed_phi3_tiny"}, {"messages", {{{"role", "user"}, {"content", content}}}}, {"max_tokens", 12}, {"stream", stream}};
}

httplib::Result post_json(const Server& server, const std::string& path, const std::string& body) {
  return server.client().Post(path.c_str(), body, "application/json");
}

// `m3d generate --json` for the same scan, question and greedy settings (cached per question).
json generate_answer(const std::string& question) {
  static std::map<std::string, json> answers;
  if (answers.count(question)) return answers[question];
  std::string out, err;
  EXPECT_EQ(run_command(kM3d + " generate --model " + model_dir() + " --image " + kScan + " --prompt '" + question + "' --greedy --max-new-tokens 12 --json",
                        &out, &err),
            0)
      << err;
  return answers[question] = json::parse(out);
}

// The `data:` payloads of a server-sent event stream.
std::vector<std::string> sse_data(const std::string& body) {
  std::vector<std::string> out;
  size_t at = 0;
  while ((at = body.find("data: ", at)) != std::string::npos) {
    const size_t end = body.find("\n\n", at);
    out.push_back(body.substr(at + 6, end - at - 6));
    at = end;
  }
  return out;
}

void expect_error(const httplib::Result& res, int status, const std::string& fragment) {
  ASSERT_TRUE(res) << "no response";
  EXPECT_EQ(res->status, status) << res->body;
  const json body = json::parse(res->body, nullptr, false);
  ASSERT_TRUE(body.contains("error")) << res->body;
  EXPECT_EQ(body["error"]["code"], status);
  EXPECT_TRUE(body["error"]["type"].is_string());
  EXPECT_NE(body["error"]["message"].get<std::string>().find(fragment), std::string::npos) << res->body;
}

size_t entries(const std::string& dir) { return fs::exists(dir) ? std::distance(fs::directory_iterator(dir), fs::directory_iterator()) : 0; }

// /metrics once it shows `fragment`, polled for up to 5 s: the server counts a request in
// its logger, which httplib runs after the response is written, so a client that reads
// /metrics right after an answer (on a new connection, as after a 413) can be first.
std::string metrics_showing(const Server& server, const std::string& fragment) {
  std::string body;
  for (int attempt = 0; attempt < 50; ++attempt) {
    const auto metrics = server.client().Get("/metrics");
    body = metrics ? metrics->body : std::string();
    if (body.find(fragment) != std::string::npos) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return body;
}

TEST(Serve, StudyGeometryListAndDelete) {
  const std::string data = temp_dir() + "/data";
  Server server(data);
  ASSERT_TRUE(server.ready());
  const json study = upload(server, kScan, "anatomical.nii");
  // nibabel: shape (33, 41, 25), zooms 2 mm, affine diag(-2, 2, 2) at (32, -40, -16) RAS = LPS (-32, 40, -16), axes L A S.
  EXPECT_EQ(study["scan"]["size_ijk"], json({33, 41, 25}));
  EXPECT_EQ(study["scan"]["spacing"], json({2.0, 2.0, 2.0}));
  EXPECT_EQ(study["scan"]["origin"], json({-32.0, 40.0, -16.0}));
  EXPECT_EQ(study["scan"]["direction"], json({1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0}));
  EXPECT_EQ(study["model_grid"], json({32, 256, 256}));
  EXPECT_EQ(study["bytes"], fs::file_size(kScan));
  EXPECT_EQ(study["filename"], "anatomical.nii");
  const std::string id = study["id"];
  EXPECT_EQ(body_of(server.client().Get(("/v1/studies/" + id).c_str())), study);
  const json list = body_of(server.client().Get("/v1/studies"));
  ASSERT_EQ(list["data"].size(), 1u);
  EXPECT_EQ(list["data"][0], study);
  EXPECT_TRUE(fs::exists(data + "/studies/" + id + "/meta.json"));

  const auto deleted = server.client().Delete(("/v1/studies/" + id).c_str());
  ASSERT_TRUE(deleted);
  EXPECT_EQ(deleted->status, 204);
  expect_error(server.client().Get(("/v1/studies/" + id).c_str()), 404, id);
  expect_error(server.client().Delete(("/v1/studies/" + id).c_str()), 404, id);
  expect_error(server.client().Get("/v1/studies/NOT-HEX"), 404, "16 hex digits");
  EXPECT_EQ(entries(data + "/studies"), 0u);
  EXPECT_EQ(entries(data + "/tmp"), 0u);
}

TEST(Serve, ChatEqualsGenerateStreamedAndNot) {
  Server server(temp_dir() + "/data");
  ASSERT_TRUE(server.ready());
  const std::string id = upload(server, kScan, "anatomical.nii")["id"];
  const json expected = generate_answer(kQuestion);

  const json answer = body_of(post_json(server, "/v1/chat/completions", chat_request(id, kQuestion, false).dump()));
  ASSERT_TRUE(answer.contains("choices")) << answer;
  EXPECT_EQ(answer["object"], "chat.completion");
  EXPECT_EQ(answer["model"], "lamed_phi3_tiny");
  EXPECT_EQ(answer["choices"][0]["message"]["content"], expected["text"]);
  EXPECT_EQ(answer["choices"][0]["finish_reason"], expected["finish_reason"]);
  EXPECT_EQ(answer["usage"]["completion_tokens"], expected["usage"]["completion_tokens"]);
  EXPECT_EQ(answer["usage"]["prompt_tokens"], expected["usage"]["prompt_tokens"]);
  EXPECT_EQ(answer["m3d"]["box"], expected["box"]);
  EXPECT_EQ(answer["m3d"]["study"], id);

  const auto streamed = post_json(server, "/v1/chat/completions", chat_request(id, kQuestion, true).dump());
  ASSERT_TRUE(streamed && streamed->status == 200);
  EXPECT_EQ(streamed->get_header_value("Content-Type"), "text/event-stream");
  const std::vector<std::string> events = sse_data(streamed->body);
  EXPECT_EQ(events.back(), "[DONE]");
  ASSERT_GE(events.size(), 4u) << "a role chunk, the text, the final chunk, [DONE]:\n" << streamed->body;
  std::string text;
  for (size_t i = 0; i + 1 < events.size(); ++i) {
    const json chunk = json::parse(events[i]);
    EXPECT_EQ(chunk["object"], "chat.completion.chunk");
    text += chunk["choices"][0]["delta"].value("content", "");
  }
  EXPECT_EQ(text, expected["text"]);
  const json last = json::parse(events[events.size() - 2]);
  EXPECT_EQ(last["choices"][0]["finish_reason"], expected["finish_reason"]);
  EXPECT_EQ(last["m3d"]["text"], expected["text"]);

  // A follow-up on the cached study: the image in the first message, the question in the last.
  json follow = chat_request(id, kQuestion, false);
  follow["messages"].push_back({{"role", "assistant"}, {"content", answer["choices"][0]["message"]["content"]}});
  follow["messages"].push_back({{"role", "user"}, {"content", kSecondQuestion}});
  const json second = body_of(post_json(server, "/v1/chat/completions", follow.dump()));
  ASSERT_TRUE(second.contains("choices")) << second;
  EXPECT_EQ(second["choices"][0]["message"]["content"], generate_answer(kSecondQuestion)["text"]);
  EXPECT_NE(expected["text"], generate_answer(kSecondQuestion)["text"]) << "the two questions must tell answers apart";

  const std::string three_chats = "m3d_requests_total{route=\"/v1/chat/completions\",status=\"200\"} 3";
  const std::string metrics = metrics_showing(server, three_chats);
  EXPECT_NE(metrics.find(three_chats), std::string::npos) << metrics;
  EXPECT_NE(metrics.find("m3d_request_seconds_count"), std::string::npos);
  EXPECT_NE(metrics.find("m3d_generated_tokens_total"), std::string::npos);
}

// m3d_generated_tokens_total from /metrics.
int64_t generated_tokens(const Server& server) {
  const auto metrics = server.client().Get("/metrics");
  const std::string name = "m3d_generated_tokens_total ";
  const size_t at = metrics ? metrics->body.find("\n" + name) : std::string::npos;
  EXPECT_NE(at, std::string::npos);
  return at == std::string::npos ? -1 : std::stoll(metrics->body.substr(at + 1 + name.size()));
}

// A streamed question about `study` that generates 240 tokens, the most the fixture's
// 512 positions leave after the image and the question; its content_receiver is the caller's.
httplib::Request long_stream_request(const std::string& study) {
  json request = chat_request(study, kSecondQuestion, true);
  request["max_tokens"] = 240;
  httplib::Request req;
  req.method = "POST";
  req.path = "/v1/chat/completions";
  req.body = request.dump();
  req.set_header("Content-Type", "application/json");
  return req;
}

TEST(Serve, ClientGoneCancelsStream) {
  Server server(temp_dir() + "/data");
  ASSERT_TRUE(server.ready());
  const std::string id = upload(server, kScan, "anatomical.nii")["id"];
  httplib::Request req = long_stream_request(id);
  int chunks = 0;
  req.content_receiver = [&](const char*, size_t, uint64_t, uint64_t) { return ++chunks < 3; };  // hang up after a few pieces
  const int64_t before = generated_tokens(server);
  server.client().send(req);
  EXPECT_EQ(chunks, 3);
  // The generation stopped well short of 240 tokens, and the slot is free for the next request.
  const json answer = body_of(post_json(server, "/v1/chat/completions", chat_request(id, kQuestion, false).dump()));
  ASSERT_TRUE(answer.contains("choices")) << answer;
  EXPECT_EQ(answer["choices"][0]["message"]["content"], generate_answer(kQuestion)["text"]);
  const int64_t cancelled = generated_tokens(server) - before - answer["usage"]["completion_tokens"].get<int64_t>();
  std::printf("the stream stopped after %lld of 240 tokens\n", static_cast<long long>(cancelled));
  EXPECT_LT(cancelled, 40) << server.log();
  EXPECT_NE(server.log().find("the client went away"), std::string::npos) << server.log();
}

TEST(Serve, FullQueueIs429) {
  Server server(temp_dir() + "/data", {"--queue", "0"});
  ASSERT_TRUE(server.ready());
  const std::string id = upload(server, kScan, "anatomical.nii")["id"];
  httplib::Request req = long_stream_request(id);
  std::optional<httplib::Result> second;
  // The first chunk comes before the study is even encoded: the slot is taken, and no one may wait.
  req.content_receiver = [&](const char*, size_t, uint64_t, uint64_t) {
    if (!second) second.emplace(post_json(server, "/v1/chat/completions", chat_request(id, kQuestion, false).dump()));
    return true;
  };
  const auto first = server.client().send(req);
  ASSERT_TRUE(first);
  EXPECT_EQ(first->status, 200);
  ASSERT_TRUE(second.has_value());
  expect_error(*second, 429, "--queue 0");
  const auto third = post_json(server, "/v1/chat/completions", chat_request(id, kQuestion, false).dump());
  ASSERT_TRUE(third);
  EXPECT_EQ(third->status, 200) << third->body;
}

TEST(Serve, StudySurvivesRestart) {
  const std::string data = temp_dir() + "/data";
  json study;
  {
    Server first(data);
    ASSERT_TRUE(first.ready());
    study = upload(first, kScan, "anatomical.nii");
    EXPECT_EQ(first.stop(), 0) << first.log();  // SIGTERM stops it cleanly
  }
  Server second(data);
  ASSERT_TRUE(second.ready());
  const std::string id = study["id"];
  EXPECT_EQ(body_of(second.client().Get(("/v1/studies/" + id).c_str())), study);
  // Prepared again from disk, it answers as before.
  const json answer = body_of(post_json(second, "/v1/chat/completions", chat_request(id, kQuestion, false).dump()));
  ASSERT_TRUE(answer.contains("choices")) << answer;
  EXPECT_EQ(answer["choices"][0]["message"]["content"], generate_answer(kQuestion)["text"]);
}

TEST(Serve, BadRequestsAreJsonErrorsAndLeaveNothing) {
  const std::string data = temp_dir() + "/data";
  Server server(data, {"--max-body-mb", "1", "--max-new-tokens-limit", "64"});
  ASSERT_TRUE(server.ready());
  const std::string chat = "/v1/chat/completions";
  expect_error(post_json(server, chat, "{\"messages\": ["), 400, "malformed JSON");
  expect_error(post_json(server, chat, "{\"model\": \"lamed_phi3_tiny\"}"), 400, "'messages'");
  json request = chat_request("0123456789abcdef", kQuestion, false);
  expect_error(post_json(server, chat, request.dump()), 404, "0123456789abcdef");
  request["max_tokens"] = 65;
  expect_error(post_json(server, chat, request.dump()), 400, "'max_tokens'");
  request = chat_request("0123456789abcdef", kQuestion, false);
  request["messages"][0]["content"][0]["image_url"]["url"] = "file:///etc/passwd";
  expect_error(post_json(server, chat, request.dump()), 400, "messages[0].content[0].image_url.url");
  request["model"] = "gpt-4o";
  expect_error(post_json(server, chat, request.dump()), 404, "gpt-4o");

  const std::string garbage(4096, 'x');
  expect_error(server.client().Post("/v1/studies?filename=scan.nii", garbage, "application/octet-stream"), 400, "scan.nii");
  expect_error(server.client().Post("/v1/studies", garbage, "application/octet-stream"), 400, "cannot tell");
  expect_error(server.client().Post("/v1/studies?filename=scan.nii", std::string(2 << 20, 'x'), "application/octet-stream"), 413, "--max-body-mb");
  EXPECT_EQ(entries(data + "/studies"), 0u);
  EXPECT_EQ(entries(data + "/tmp"), 0u);

  expect_error(server.client().Post("/v1/segment", "{}", "application/json"), 400, "has no [SEG] segmentation head");
  expect_error(server.client().Post("/v1/embeddings", "{\"input\": \"x\"}", "application/json"), 501, "needs a contrastive model");
  expect_error(server.client().Get("/v1/nothing"), 404, "no route");
  const std::string one_413 = "m3d_requests_total{route=\"/v1/studies\",status=\"413\"} 1";
  const std::string metrics = metrics_showing(server, one_413);
  EXPECT_NE(metrics.find(one_413), std::string::npos) << metrics;
  EXPECT_NE(metrics.find("m3d_queue_depth 0"), std::string::npos);
}

// The tiny LaMed with a [SEG] head as tools/reference/make_lamed_seg_fixtures.py builds it:
// tests/fixtures/lamed_seg_tiny's tensors plus ../shared/fixtures/segvol_small's, whose
// image encoder is also the vision tower's ViT (as tests/test_lamed_seg.cpp assembles it).
std::string seg_model_dir(const std::string& under) {
  const std::string source = fixture("lamed_seg_tiny"), dir = under + "/lamed_seg";
  fs::create_directories(dir);
  fs::copy_file(source + "/config.json", dir + "/config.json");
  fs::copy_file(source + "/tokenizer.json", dir + "/tokenizer.json");
  const io::Checkpoint lamed = io::checkpoint_open(source + "/model.safetensors");
  const io::Checkpoint segvol = io::checkpoint_open(shared_fixture("segvol_small") + "/model.safetensors");
  std::vector<io::TensorBytes> tensors;
  auto add = [&](const std::string& name, const io::TensorRecord& record) {
    EXPECT_TRUE(record.is_contiguous()) << name;
    tensors.push_back({name, record.dtype, record.shape, record.data, record.nbytes()});
  };
  for (const auto& [name, record] : lamed.tensors) add(name, record);
  const std::string encoder = "model.seg_module.image_encoder.";
  for (const auto& [name, record] : segvol.tensors) {
    add(name, record);
    if (name.compare(0, encoder.size(), encoder) == 0) add("model.vision_tower.vision_tower." + name.substr(encoder.size()), record);
  }
  io::safetensors_write(dir + "/model.safetensors", tensors);
  return dir;
}

TEST(Serve, SegmentEqualsCliMaskOnTheScanGrid) {
  // POST /v1/segment answers as `m3d segment` does and saves the same mask on the
  // scan's own grid; GET of its URL returns that NIfTI; bad requests are JSON errors.
  const std::string dir = temp_dir();
  const std::string model = seg_model_dir(dir);
  const std::string prompt = read_json(fixture("lamed_seg_tiny") + "/generate_expected.json")["prompt"];
  std::string out, err;
  ASSERT_EQ(run_command(
                kM3d + " segment --model " + model + " --image " + kScan + " --prompt '" + prompt + "' --greedy --max-new-tokens 16 -o " + dir + "/cli.nii.gz",
                &out, &err),
            0)
      << err;
  Server server(dir + "/data", {}, model);
  ASSERT_TRUE(server.ready()) << server.log();
  const std::string id = upload(server, kScan, "anatomical.nii")["id"];
  const json request = {{"study", id}, {"prompt", prompt}, {"max_tokens", 16}};
  const auto res = post_json(server, "/v1/segment", request.dump());
  ASSERT_TRUE(res && res->status == 200) << (res ? res->body : "no response") << server.log();
  const json answer = body_of(res);
  EXPECT_EQ(answer["m3d"]["text"].get<std::string>() + "\n", out);
  ASSERT_TRUE(answer["mask"].is_object()) << answer;
  EXPECT_GT(answer["mask"]["seg_tokens"].get<int64_t>(), 0);
  const auto mask = server.client().Get(answer["mask"]["url"].get<std::string>().c_str());
  ASSERT_TRUE(mask && mask->status == 200) << (mask ? mask->body : "no response");
  write_bytes(dir + "/served.nii.gz", std::vector<uint8_t>(mask->body.begin(), mask->body.end()));
  const imaging::RawVolume served = imaging::volume_read(dir + "/served.nii.gz"), cli = imaging::volume_read(dir + "/cli.nii.gz");
  EXPECT_EQ(served.size, imaging::volume_read(kScan).size);
  EXPECT_EQ(served.size, cli.size);
  EXPECT_EQ(served.dtype, DType::U8);
  EXPECT_EQ(served.data, cli.data);
  int64_t ones = 0;
  for (uint8_t v : served.data) ones += v != 0;
  EXPECT_GT(ones, 0);
  EXPECT_EQ(answer["mask"]["scan_voxels"], ones);

  expect_error(post_json(server, "/v1/segment", json{{"study", id}}.dump()), 400, "'prompt'");
  expect_error(post_json(server, "/v1/segment", json{{"study", "../etc"}, {"prompt", "x"}}.dump()), 400, "'study'");
  expect_error(post_json(server, "/v1/segment", json{{"study", "0123456789abcdef"}, {"prompt", "x"}}.dump()), 404, "0123456789abcdef");
  expect_error(server.client().Get(("/v1/studies/" + id + "/masks/0123456789abcdef.nii.gz").c_str()), 404, "no mask");
  ASSERT_EQ(server.client().Delete(("/v1/studies/" + id).c_str())->status, 204);
  expect_error(server.client().Get(answer["mask"]["url"].get<std::string>().c_str()), 404, "no mask");
}

// The mask a /v1/segment answer links to, fetched and read.
imaging::RawVolume served_mask(const Server& server, const json& answer, const std::string& path) {
  EXPECT_TRUE(answer["mask"].is_object()) << answer;
  if (!answer["mask"].is_object()) return {};
  const auto mask = server.client().Get(answer["mask"]["url"].get<std::string>().c_str());
  EXPECT_TRUE(mask && mask->status == 200) << (mask ? mask->body : "no response");
  if (!mask) return {};
  write_bytes(path, std::vector<uint8_t>(mask->body.begin(), mask->body.end()));
  return imaging::volume_read(path);
}

TEST(Serve, SegmentBoxAndPointsEqualCli) {
  // "box" / "points" in model voxels, alone and with a prompt, give `m3d segment --box /
  // --point`'s mask voxel for voxel; malformed or off-grid prompts are 400 naming the field.
  const std::string dir = temp_dir();
  const std::string model = seg_model_dir(dir);
  const std::string prompt = read_json(fixture("lamed_seg_tiny") + "/generate_expected.json")["prompt"];
  const std::string cli = kM3d + " segment --model " + model + " --image " + kScan + " --box 8,60,60,24,200,200 --point 16,100,120 --point 10,150,90,0";
  std::string out, err;
  ASSERT_EQ(run_command(cli + " -o " + dir + "/cli_spatial.nii.gz", &out, &err), 0) << err;
  ASSERT_EQ(run_command(cli + " --prompt '" + prompt + "' --greedy --max-new-tokens 16 -o " + dir + "/cli_both.nii.gz", &out, &err), 0) << err;
  Server server(dir + "/data", {}, model);
  ASSERT_TRUE(server.ready()) << server.log();
  const std::string id = upload(server, kScan, "anatomical.nii")["id"];
  const json prompts = {{"study", id}, {"box", {8, 60, 60, 24, 200, 200}}, {"points", {{16, 100, 120}, {10, 150, 90, 0}}}};

  const auto spatial = post_json(server, "/v1/segment", prompts.dump());
  ASSERT_TRUE(spatial && spatial->status == 200) << (spatial ? spatial->body : "no response") << server.log();
  const json spatial_answer = body_of(spatial);
  EXPECT_EQ(spatial_answer["m3d"]["text"], "");
  EXPECT_EQ(spatial_answer["usage"]["completion_tokens"], 0);
  const imaging::RawVolume cli_spatial = imaging::volume_read(dir + "/cli_spatial.nii.gz");
  const imaging::RawVolume served_spatial = served_mask(server, spatial_answer, dir + "/served_spatial.nii.gz");
  EXPECT_EQ(served_spatial.size, cli_spatial.size);
  EXPECT_EQ(served_spatial.data, cli_spatial.data);
  EXPECT_GT(std::count(cli_spatial.data.begin(), cli_spatial.data.end(), 1), 0);

  json both = prompts;
  both["prompt"] = prompt;
  both["max_tokens"] = 16;
  const auto joined = post_json(server, "/v1/segment", both.dump());
  ASSERT_TRUE(joined && joined->status == 200) << (joined ? joined->body : "no response") << server.log();
  const json joined_answer = body_of(joined);
  EXPECT_EQ(joined_answer["m3d"]["text"].get<std::string>() + "\n", out);
  EXPECT_GT(joined_answer["mask"]["seg_tokens"].get<int64_t>(), 0);
  const imaging::RawVolume cli_both = imaging::volume_read(dir + "/cli_both.nii.gz");
  EXPECT_EQ(served_mask(server, joined_answer, dir + "/served_both.nii.gz").data, cli_both.data);
  EXPECT_NE(cli_both.data, cli_spatial.data);  // the [SEG] state took part

  const std::vector<std::pair<json, std::string>> bad = {
      {{{"box", {24, 60, 60, 8, 200, 200}}}, "'box' [24, 60, 60, 8, 200, 200]: inverted on d (24 > 8)"},
      {{{"box", {8, 60, 60, 24, 200, 256}}}, "'box' [8, 60, 60, 24, 200, 256]: w = 256 is outside the model grid 32x256x256"},
      {{{"box", {8, 60, 60, 24, 200}}}, "'box' must be [d1, h1, w1, d2, h2, w2]"},
      {{{"box", "8,60,60,24,200,200"}}, "'box' must be"},
      {{{"points", {{16, 100, 120}, {32, 100, 120}}}}, "'points'[1] [32, 100, 120]: d = 32 is outside the model grid"},
      {{{"points", {{16, 100}}}}, "'points'[0] must be [d, h, w] or [d, h, w, label]"},
      {{{"points", {{16, 100, 120, 2}}}}, "'points'[0]: label 2 is not 1 (positive) or 0 (negative)"},
      {{{"points", json::array()}}, "'points' must be a non-empty array"},
      {{{"prompt", ""}, {"box", {8, 60, 60, 24, 200, 200}}}, "'prompt' must be a non-empty string"},
  };
  for (const auto& [fields, message] : bad) {
    json request = fields;
    request["study"] = id;
    expect_error(post_json(server, "/v1/segment", request.dump()), 400, message);
  }
  EXPECT_EQ(entries(dir + "/data/tmp"), 0u);
}

// Zips made with Python's zipfile (deflate): the DICOM series of tests/fixtures/dicom_seg
// under a folder, entries with unsafe names, too many files, a bomb, and two forged ones
// (a recorded size smaller than the data inflates to; a wrong CRC).
std::string make_zips(const std::string& dir) {
  const std::string script = dir + "/zips.py";
  std::ofstream(script) << R"(import io, os, struct, sys, zipfile
series, out = sys.argv[1], sys.argv[2]
def make(name, entries, compression=zipfile.ZIP_DEFLATED):
    with zipfile.ZipFile(os.path.join(out, name), "w", compression) as z:
        for entry, data in entries:
            z.writestr(entry, data)
slices = [(f"CT/{n}", open(os.path.join(series, n), "rb").read()) for n in sorted(os.listdir(series))]
make("series.zip", [("CT/", b"")] + slices)
make("slip.zip", [("../evil.dcm", b"x")])
make("absolute.zip", [("/etc/evil.dcm", b"x")])
make("backslash.zip", [("CT\\..\\evil.dcm", b"x")])
make("many.zip", [(f"f{i}", b"x") for i in range(9)])
make("bomb.zip", [("zeros.dcm", bytes(2 << 20))])
def forged(name, offset, value):
    z = bytearray(open(os.path.join(out, "small.zip"), "rb").read())
    central = z.rfind(b"PK\x01\x02")
    struct.pack_into("<I", z, central + offset, value)
    open(os.path.join(out, name), "wb").write(z)
make("small.zip", [("zeros.dcm", bytes(100000))])
forged("liar.zip", 24, 1000)       # uncompressed size: 1000 recorded, 100000 inflated
forged("crc.zip", 16, 0x12345678)  # CRC-32
)";
  std::string out, err;
  EXPECT_EQ(run_command("python3 " + script + " " + fixture("dicom_seg/series") + " " + dir, &out, &err), 0) << err;
  return dir;
}

TEST(Serve, DicomZipUploadIsTheSeriesAndBadZipsAreRejected) {
  // A zip of the fixture series is a study with the series' own geometry (as volume_read of
  // the folder) whose files are kept under the study; zip-slip names, too many files, a
  // decompression bomb and forged sizes or CRCs are refused and leave nothing on disk.
  const std::string dir = temp_dir();
  const std::string zips = make_zips(dir);
  const std::string data = dir + "/data";
  std::optional<Server> server(std::in_place, data, std::vector<std::string>{"--max-zip-entries", "8", "--max-unzipped-mb", "1"});
  ASSERT_TRUE(server->ready());
  const json study = upload(*server, zips + "/series.zip", "ct.zip");
  const imaging::RawVolume series = imaging::volume_read(fixture("dicom_seg/series"));
  EXPECT_EQ(study["format"], "dicom");
  EXPECT_EQ(study["filename"], "ct.zip");
  EXPECT_EQ(study["scan"]["size_ijk"], json(series.size));
  EXPECT_EQ(study["scan"]["spacing"], json(series.geometry.spacing));
  EXPECT_EQ(study["scan"]["origin"], json(series.geometry.origin));
  EXPECT_EQ(study["scan"]["direction"], json(series.geometry.direction));
  EXPECT_TRUE(study["scan"]["has_map"].get<bool>());
  const std::string id = study["id"];
  EXPECT_EQ(entries(data + "/studies/" + id + "/series"), 6u);
  EXPECT_EQ(imaging::volume_read(data + "/studies/" + id + "/series").data, series.data);
  // Known by its first bytes too.
  const auto unnamed = server->client().Post("/v1/studies", file_text(zips + "/series.zip"), "application/octet-stream");
  ASSERT_TRUE(unnamed && unnamed->status == 201) << (unnamed ? unnamed->body : "no response");
  EXPECT_EQ(body_of(unnamed)["format"], "dicom");

  const std::vector<std::tuple<std::string, int, std::string>> bad = {
      {"slip.zip", 400, "slip.zip: entry '../evil.dcm' has a '..' component"},
      {"absolute.zip", 400, "entry '/etc/evil.dcm' has an absolute path"},
      {"backslash.zip", 400, "has a backslash"},
      {"many.zip", 413, "many.zip: 9 files, more than the server's --max-zip-entries 8"},
      {"bomb.zip", 413, "bomb.zip: the files inflate to 2097152 bytes, more than the server's --max-unzipped-mb 1"},
      {"liar.zip", 400, "liar.zip: zip entry 'zeros.dcm' inflates past its recorded size of 1000 bytes"},
      {"crc.zip", 400, "crc.zip: zip entry 'zeros.dcm': CRC-32"},
  };
  for (const auto& [name, status, message] : bad) {
    const auto res = server->client().Post(("/v1/studies?filename=" + name).c_str(), file_text(zips + "/" + name), "application/zip");
    expect_error(res, status, message);
    if (res) { EXPECT_EQ(res->body.find(data), std::string::npos) << "a server path in " << res->body; }
  }
  EXPECT_EQ(entries(data + "/studies"), 2u);
  EXPECT_EQ(entries(data + "/tmp"), 0u);

  // The series stays with the study across a restart.
  EXPECT_EQ(server->stop(), 0);
  server.emplace(data);
  ASSERT_TRUE(server->ready());
  EXPECT_EQ(body_of(server->client().Get(("/v1/studies/" + id).c_str())), study);
}

TEST(Serve, SegmentOfADicomStudyAsDicomSegEqualsCli) {
  // "format": "dicom-seg" on a zipped series: the SEG the server keeps decodes onto the series
  // as `m3d segment --dicom-seg`'s does for the same prompt and box; NIfTI stays the default.
  const std::string dir = temp_dir();
  const std::string model = seg_model_dir(dir);
  const std::string zips = make_zips(dir);
  const std::string series = fixture("dicom_seg/series");
  const std::string prompt = read_json(fixture("lamed_seg_tiny") + "/generate_expected.json")["prompt"];
  std::string out, err;
  ASSERT_EQ(run_command(kM3d + " segment --model " + model + " --image " + series + " --prompt '" + prompt +
                            "' --greedy --max-new-tokens 16 --box 8,60,60,24,200,200 --dicom-seg " + dir + "/cli.dcm -o " + dir + "/cli.nii.gz",
                        &out, &err),
            0)
      << err;
  Server server(dir + "/data", {}, model);
  ASSERT_TRUE(server.ready()) << server.log();
  const std::string id = upload(server, zips + "/series.zip", "ct.zip")["id"];
  json request = {{"study", id}, {"prompt", prompt}, {"max_tokens", 16}, {"box", {8, 60, 60, 24, 200, 200}}, {"format", "dicom-seg"}};
  const auto res = post_json(server, "/v1/segment", request.dump());
  ASSERT_TRUE(res && res->status == 200) << (res ? res->body : "no response") << server.log();
  const json answer = body_of(res);
  EXPECT_EQ(answer["m3d"]["text"].get<std::string>() + "\n", out);
  ASSERT_TRUE(answer["mask"].is_object()) << answer;
  EXPECT_EQ(answer["mask"]["format"], "dicom-seg");
  const auto seg = server.client().Get(answer["mask"]["url"].get<std::string>().c_str());
  ASSERT_TRUE(seg && seg->status == 200) << (seg ? seg->body : "no response");
  EXPECT_EQ(seg->get_header_value("Content-Type"), "application/dicom");
  write_bytes(dir + "/served.dcm", std::vector<uint8_t>(seg->body.begin(), seg->body.end()));
  const imaging::RawVolume grid = imaging::volume_read(series);
  const imaging::RawVolume served = imaging::dicom_seg_read(dir + "/served.dcm", series, grid);
  EXPECT_EQ(served.data, imaging::dicom_seg_read(dir + "/cli.dcm", series, grid).data);
  EXPECT_GT(std::count(served.data.begin(), served.data.end(), 1), 0);
  EXPECT_EQ(answer["mask"]["scan_voxels"], std::count(served.data.begin(), served.data.end(), 1));

  request.erase("format");
  const json nifti = body_of(post_json(server, "/v1/segment", request.dump()));
  EXPECT_EQ(nifti["mask"]["format"], "nifti");
  EXPECT_EQ(served_mask(server, nifti, dir + "/served.nii.gz").data, imaging::volume_read(dir + "/cli.nii.gz").data);

  request["format"] = "png";
  expect_error(post_json(server, "/v1/segment", request.dump()), 400, "'format' must be");
  request["format"] = "dicom-seg";
  request["study"] = upload(server, kScan, "anatomical.nii")["id"];
  expect_error(post_json(server, "/v1/segment", request.dump()), 400, "needs a DICOM study (a zipped series)");
}

// tests/fixtures/clip/tiny_nce (M3D-CLIP, grid 8 x 16 x 16) with the tiny DistilBERT's
// WordPiece vocabulary (its 68 ids fit the BERT's 99) and a recipe to its grid, so a
// NIfTI upload and reports both embed.
std::string clip_model_dir(const std::string& under) {
  const std::string dir = under + "/tiny_clip";
  fs::create_directories(dir);
  for (const char* name : {"config.json", "model.safetensors"}) fs::copy_file(fixture("clip/tiny_nce") + "/" + name, dir + "/" + name);
  for (const char* name : {"vocab.txt", "tokenizer_config.json", "special_tokens_map.json"}) {
    fs::copy_file(fixture("med3dvlm/dec_clip_tiny") + "/" + name, dir + "/" + name);
  }
  std::ofstream(dir + "/m3d_recipe.json") << R"({"name": "tiny", "ops": [{"op": "minmax"}, {"op": "resize", "size": [8, 16, 16], "mode": "trilinear"}]})";
  return dir;
}

TEST(Serve, EmbeddingsEqualEmbedCli) {
  // POST /v1/embeddings of an uploaded study and two reports equals `m3d embed` of the
  // scan file and the same reports; usage counts the reports' WordPiece tokens
  // ([CLS] The liver is normal . [SEP]: 7; [CLS] Axial CT scan [SEP]: 5).
  const std::string root = temp_dir(), model = clip_model_dir(root);
  const std::vector<std::string> reports = {"The liver is normal.", "Axial CT scan"};
  std::string out, err;
  ASSERT_EQ(run_command(kM3d + " embed --model " + model + " --image " + kScan + " --text '" + reports[0] + "' --text '" + reports[1] + "'", &out, &err), 0)
      << err;
  const json cli = json::parse(out);
  Server server(root + "/data", {"--max-inputs", "3"}, model);
  ASSERT_TRUE(server.ready());
  const json models = body_of(server.client().Get("/v1/models"));
  ASSERT_EQ(models["data"].size(), 1u) << models;
  EXPECT_EQ(models["data"][0]["id"], "tiny_clip");
  EXPECT_EQ(models["data"][0]["m3d"]["image_grid"], json({8, 16, 16}));
  const std::string id = upload(server, kScan, "anatomical.nii")["id"];
  const json request = {{"model", "tiny_clip"}, {"input", {"m3d://studies/" + id, reports[0], reports[1]}}};
  const json answer = body_of(post_json(server, "/v1/embeddings", request.dump()));
  ASSERT_EQ(answer["data"].size(), 3u) << answer;
  EXPECT_EQ(answer["object"], "list");
  EXPECT_EQ(answer["model"], "tiny_clip");
  EXPECT_EQ(answer["usage"], json({{"prompt_tokens", 12}, {"total_tokens", 12}}));
  const std::vector<json> expected = {cli["image"][0], cli["text"][0], cli["text"][1]};
  for (size_t i = 0; i < expected.size(); ++i) {
    const json& row = answer["data"][i];
    EXPECT_EQ(row["object"], "embedding");
    EXPECT_EQ(row["index"], i);
    ASSERT_EQ(row["embedding"].size(), 32u) << i;
    for (size_t k = 0; k < 32; ++k) EXPECT_NEAR(row["embedding"][k].get<double>(), expected[i][k].get<double>(), 1e-6) << i << ", " << k;
  }
  const json single = body_of(post_json(server, "/v1/embeddings", json({{"input", reports[1]}}).dump()));
  ASSERT_EQ(single["data"].size(), 1u) << single;
  EXPECT_EQ(single["data"][0]["embedding"], answer["data"][2]["embedding"]);

  const std::string path = "/v1/embeddings";
  expect_error(post_json(server, path, "{\"input\": ["), 400, "malformed JSON");
  expect_error(post_json(server, path, "{}"), 400, "'input'");
  expect_error(post_json(server, path, json({{"input", json::array()}}).dump()), 400, "empty array");
  expect_error(post_json(server, path, json({{"input", {"a", ""}}}).dump()), 400, "input[1]: empty string");
  expect_error(post_json(server, path, json({{"input", {1, 2}}}).dump()), 400, "token-id arrays");
  expect_error(post_json(server, path, json({{"input", "m3d://studies/../../etc"}}).dump()), 400, "m3d://studies/<id>");
  expect_error(post_json(server, path, json({{"input", "m3d://studies/0123456789abcdef"}}).dump()), 404, "no study '0123456789abcdef'");
  expect_error(post_json(server, path, json({{"input", {"a", "b", "c", "d"}}}).dump()), 413, "--max-inputs is 3");
  expect_error(post_json(server, path, json({{"model", "gpt-4o"}, {"input", "a"}}).dump()), 404, "gpt-4o");
  expect_error(post_json(server, path, json({{"input", "a"}, {"encoding_format", "base64"}}).dump()), 400, "encoding_format");
  expect_error(post_json(server, "/v1/chat/completions", chat_request(id, kQuestion, false).dump()), 501, "contrastive model");
  const std::string counted = "m3d_embeddings_total 4";
  EXPECT_NE(metrics_showing(server, counted).find(counted), std::string::npos);
}

TEST(Serve, ApiKeyGuardsV1) {
  Server server(temp_dir() + "/data", {"--api-key", "s3cret"});
  ASSERT_TRUE(server.ready());
  auto client = server.client();
  const auto health = client.Get("/health");
  ASSERT_TRUE(health);
  EXPECT_EQ(health->status, 200);
  expect_error(client.Get("/v1/models"), 401, "missing API key");
  expect_error(client.Get("/v1/models", {{"Authorization", "Bearer s3creT"}}), 401, "invalid API key");
  expect_error(client.Post("/v1/studies?filename=a.nii", file_text(kScan), "application/octet-stream"), 401, "API key");
  const json models = body_of(client.Get("/v1/models", {{"Authorization", "Bearer s3cret"}}));
  ASSERT_EQ(models["data"].size(), 1u) << models;
  EXPECT_EQ(models["data"][0]["id"], "lamed_phi3_tiny");
  EXPECT_EQ(models["data"][0]["m3d"]["image_grid"], json({32, 256, 256}));
  EXPECT_EQ(models["data"][0]["m3d"]["family"], "lamed");
}

}  // namespace
}  // namespace m3d::test
