// The dashboard's HTTP server (see server.h).
#include "cairn/dashboard/server.h"

#include <arpa/inet.h>
#include <httplib.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <functional>
#include <nlohmann/json.hpp>
#include <set>
#include <thread>

#include "cairn/core/fs.h"
#include "cairn/core/net.h"
#include "cairn/core/secret.h"
#include "dashboard/assets_impl.h"

namespace cairn::dashboard {
namespace {

using nlohmann::json;

void reply_error(httplib::Response& res, int code, const std::string& message) {
  res.status = code;
  res.set_content(json{{"error", message}}.dump(), "application/json");
}

void reply_json(httplib::Response& res, const json& j) {
  res.set_header("Cache-Control", "no-store");
  res.set_content(j.dump(), "application/json");
}

// A request's parameters, checked: only `known` ones, each a whole number in [0, max].
class Params {
 public:
  Params(const httplib::Request& req, std::set<std::string> known) : req_(req) {
    for (const auto& [key, value] : req.params)
      if (key != "token" && !known.count(key)) {
        std::string names;
        for (const std::string& k : known) names += (names.empty() ? "" : ", ") + k;
        error_ = "unknown parameter '" + key + "'" +
                 (names.empty() ? " (this path takes none)" : " (known: " + names + ")");
      }
  }
  size_t number(const std::string& key, size_t fallback, size_t max) {
    if (!error_.empty() || !req_.has_param(key)) return fallback;
    const std::string v = req_.get_param_value(key);
    if (v.empty() || v.size() > 15 || v.find_first_not_of("0123456789") != std::string::npos) {
      error_ = key + ": '" + v.substr(0, 40) + "' is not a whole number >= 0";
      return fallback;
    }
    const size_t n = size_t(std::stoull(v));
    if (n > max) error_ = key + ": " + v + " is more than the most allowed, " + std::to_string(max);
    return n;
  }
  std::string text(const std::string& key) const {
    return req_.has_param(key) ? req_.get_param_value(key) : "";
  }
  const std::string& error() const { return error_; }

 private:
  const httplib::Request& req_;
  std::string error_;
};

}  // namespace

struct Server::Impl {
  explicit Impl(std::unique_ptr<httplib::Server> s) : server(std::move(s)) {}
  std::shared_ptr<RunView> view;
  ServerOptions options;
  std::unique_ptr<httplib::Server> server;  // an httplib::SSLServer with TLS
  httplib::Server& http = *server;          // REQUIRES: server set (Impl is built with one)
  std::thread thread;
  int port = 0;
  std::atomic<bool> stopped{false};
  std::atomic<bool> listen_returned{false};

  bool authorized(const httplib::Request& req) const {
    if (options.token.empty()) return true;
    const std::string auth = req.get_header_value("Authorization");
    const std::string bearer = "Bearer ";
    if (auth.rfind(bearer, 0) == 0 && core::same_secret(auth.substr(bearer.size()), options.token))
      return true;
    return req.has_param("token") && core::same_secret(req.get_param_value("token"), options.token);
  }

  // Registers GET `path`: checks the token, then runs `serve`.
  void get(const std::string& path,
           std::function<void(const httplib::Request&, httplib::Response&)> serve) {
    http.Get(path,
             [this, serve = std::move(serve)](const httplib::Request& req, httplib::Response& res) {
               if (!authorized(req)) {
                 reply_error(res, 401,
                             "this dashboard needs the job's token: ?token=... or "
                             "Authorization: Bearer ...");
                 return;
               }
               serve(req, res);
             });
  }

  void routes() {
    for (size_t i = 0; i < kAssetCount; ++i) {
      const Asset& a = kAssets[i];
      get(a.path, [&a](const httplib::Request&, httplib::Response& res) {
        res.set_content(reinterpret_cast<const char*>(a.data), a.size, a.type);
      });
    }
    get("/api/status", [this](const httplib::Request& req, httplib::Response& res) {
      Params p(req, {});
      if (!p.error().empty()) return reply_error(res, 400, p.error());
      json s = view->status();
      s["control"] = bool(options.stop_job);
      reply_json(res, s);
    });
    // Liveness for a probe (Kubernetes' httpGet cannot carry the token): says nothing of the
    // job, only that the process serving it answers.
    http.Get("/healthz", [](const httplib::Request&, httplib::Response& res) {
      res.set_header("Cache-Control", "no-store");
      res.set_content("ok\n", "text/plain; charset=utf-8");
    });
    get("/api/stop", [](const httplib::Request&, httplib::Response& res) {
      reply_error(res, 405, "/api/stop takes POST");
    });
    http.Post("/api/stop", [this](const httplib::Request& req, httplib::Response& res) {
      if (!authorized(req)) return reply_error(res, 401, "this dashboard needs the job's token");
      if (!options.stop_job)
        return reply_error(res, 403,
                           "this dashboard only reads: start it with --dashboard-control to "
                           "allow stopping the job");
      if (req.get_header_value("X-Cairn-Request") != "stop")
        return reply_error(res, 400, "/api/stop needs the header 'X-Cairn-Request: stop'");
      Params p(req, {});
      if (!p.error().empty()) return reply_error(res, 400, p.error());
      if (Status s = options.stop_job(req.remote_addr); !s.ok())
        return reply_error(res, 409, s.message());
      res.status = 202;
      reply_json(res, json{{"stopping", true}});
    });
    for (const char* which : {"metrics", "events"}) {
      const bool metrics = std::string(which) == "metrics";
      get(std::string("/api/") + which,
          [this, metrics](const httplib::Request& req, httplib::Response& res) {
            Params p(req, {"since", "limit"});
            const size_t since = p.number("since", 0, size_t(1) << 40);
            const size_t limit = p.number("limit", 10000, 100000);
            if (!p.error().empty()) return reply_error(res, 400, p.error());
            reply_json(res, metrics ? view->metrics(since, limit) : view->events(since, limit));
          });
    }
    get("/api/logs", [this](const httplib::Request& req, httplib::Response& res) {
      Params p(req, {});
      if (!p.error().empty()) return reply_error(res, 400, p.error());
      reply_json(res, json{{"logs", view->logs()}});
    });
    get("/api/log", [this](const httplib::Request& req, httplib::Response& res) {
      Params p(req, {"name", "lines"});
      const size_t lines = p.number("lines", 200, 10000);
      if (!p.error().empty()) return reply_error(res, 400, p.error());
      if (!req.has_param("name")) return reply_error(res, 400, "name: missing (see /api/logs)");
      Result<std::string> tail = view->log_tail(p.text("name"), lines);
      if (!tail.ok()) return reply_error(res, 404, tail.status().message());
      res.set_header("Cache-Control", "no-store");
      res.set_content(*tail, "text/plain; charset=utf-8");
    });
    get("/plan.svg", [this](const httplib::Request& req, httplib::Response& res) {
      Params p(req, {});
      if (!p.error().empty()) return reply_error(res, 400, p.error());
      Result<std::string> svg = view->plan_picture();
      if (!svg.ok())
        return reply_error(res, svg.status().code() == StatusCode::kNotFound ? 404 : 500,
                           svg.status().message());
      res.set_header("Cache-Control", "no-store");
      // A picture, never a document that runs anything.
      res.set_header("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'");
      res.set_content(*svg, "image/svg+xml");
    });
    get("/metrics", [this](const httplib::Request& req, httplib::Response& res) {
      res.set_content(view->prometheus(), "text/plain; version=0.0.4; charset=utf-8");
    });
    http.set_error_handler([](const httplib::Request& req, httplib::Response& res) {
      if (res.status == 404 && res.body.empty())
        reply_error(res, 404,
                    "no such path: " + req.path +
                        " (paths: /, /api/status, /api/metrics, /api/events, /api/logs, "
                        "/api/log, /plan.svg, /metrics, /healthz, POST /api/stop)");
    });
    http.set_exception_handler(
        [](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
          std::string what = "internal error";
          try {
            if (ep) std::rethrow_exception(ep);
          } catch (const std::exception& e) {
            what = e.what();
          } catch (...) {
          }
          reply_error(res, 500, what);
        });
  }
};

Server::Server(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Result<std::unique_ptr<Server>> Server::Start(std::shared_ptr<RunView> view, ServerOptions o) {
  if (!core::is_loopback_host(o.bind) && o.token.empty())
    return Status::InvalidArgument("the dashboard on " + o.bind +
                                   " (not loopback) needs the job's token: set CAIRN_JOB_TOKEN");
  if (o.port < 0 || o.port > 65535)
    return Status::InvalidArgument("--port " + std::to_string(o.port) + " is not in 0..65535");
  if (o.tls_cert_path.empty() != o.tls_key_path.empty())
    return Status::InvalidArgument("the dashboard's TLS needs both a certificate and its key");
  const bool tls = !o.tls_cert_path.empty();
  if (!tls && !core::is_loopback_host(o.bind) && !o.insecure)
    return Status::InvalidArgument(
        "the dashboard on " + o.bind +
        " (not loopback) would take the job's token over plain HTTP: give a certificate "
        "(--dashboard-tls-cert, --dashboard-tls-key), bind to loopback, or pass "
        "--dashboard-insecure to accept that");
  std::unique_ptr<httplib::Server> http;
  if (tls) {
    for (const std::string* f : {&o.tls_cert_path, &o.tls_key_path})
      if (auto text = core::read_file(*f); !text.ok())
        return text.status().WithContext("the dashboard's TLS");
    auto ssl =
        std::make_unique<httplib::SSLServer>(o.tls_cert_path.c_str(), o.tls_key_path.c_str());
    if (!ssl->is_valid())
      return Status::InvalidArgument("the dashboard's TLS: " + o.tls_cert_path + " and " +
                                     o.tls_key_path +
                                     " are not a PEM certificate and its private key");
    http = std::move(ssl);
  } else {
    if (!core::is_loopback_host(o.bind))
      spdlog::warn(
          "dashboard on {} over plain HTTP (--dashboard-insecure): the job's token "
          "crosses the network unencrypted",
          o.bind);
    http = std::make_unique<httplib::Server>();
  }
  auto impl = std::make_unique<Impl>(std::move(http));
  impl->view = std::move(view);
  impl->options = std::move(o);
  impl->routes();
  // SO_REUSEADDR only: cpp-httplib's default adds SO_REUSEPORT, with which a second server
  // binds a port already in use and the two share its connections.
  impl->http.set_socket_options([](int sock) {
    int yes = 1;
    ::setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
  });
  const ServerOptions& opt = impl->options;
  if (opt.port == 0) {
    impl->port = impl->http.bind_to_any_port(opt.bind);
  } else {
    impl->port = impl->http.bind_to_port(opt.bind, opt.port) ? opt.port : -1;
  }
  if (impl->port <= 0)
    return Status::IoError("cannot listen on " + opt.bind + ":" + std::to_string(opt.port) +
                           " (in use, or not an address of this machine)");
  Impl* raw = impl.get();
  impl->thread = std::thread([raw] {
    raw->http.listen_after_bind();
    raw->listen_returned = true;
  });
  // cpp-httplib's stop() does nothing until the loop runs: wait for it, so that a stop right
  // after the start is never lost.
  while (!impl->http.is_running() && !impl->listen_returned)
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  if (!impl->http.is_running()) {
    impl->thread.join();
    return Status::IoError("the dashboard's server stopped as it started");
  }
  return std::unique_ptr<Server>(new Server(std::move(impl)));
}

Server::~Server() { stop(); }

int Server::port() const { return impl_->port; }

std::string Server::url() const {
  const std::string& bind = impl_->options.bind;
  std::string host = bind;
  if (bind == "0.0.0.0" || bind == "::") {  // every address: name this machine
    char name[256] = {};
    host = ::gethostname(name, sizeof(name) - 1) == 0 && name[0] ? name : "127.0.0.1";
  }
  const bool tls = !impl_->options.tls_cert_path.empty();
  std::string u = (tls ? "https://" : "http://") +
                  (host.find(':') != std::string::npos ? "[" + host + "]" : host) + ":" +
                  std::to_string(impl_->port) + "/";
  // The token is never part of it: the address is printed and logged.
  if (!impl_->options.token.empty()) u += "?token=$CAIRN_JOB_TOKEN";
  return u;
}

void Server::stop() {
  if (impl_->stopped.exchange(true)) return;
  impl_->http.stop();
  if (impl_->thread.joinable()) impl_->thread.join();
}

}  // namespace cairn::dashboard
