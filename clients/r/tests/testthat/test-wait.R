# task_wait polls with back-off and keeps waiting through a server restart.

# A server for task 1 that is restarted while the task runs: up (task active), gone
# (connection refused), back behind a proxy answering 503 twice, then up (task completed).
# It runs in a background R process so the wait in this one meets each phase for real.
restarting_server <- function(port_file) {
  phase_app <- function(status, run_status, unavailable = 0) {
    app <- webfakes::new_app()
    app$locals$unavailable <- unavailable
    token <- function() {
      enc <- function(x) gsub("=+$", "", chartr("+/", "-_", jsonlite::base64_enc(charToRaw(x))))
      claims <- jsonlite::toJSON(list(user_id = 1, exp = as.numeric(Sys.time()) + 3600), auto_unbox = TRUE)
      paste(enc('{"alg":"HS256"}'), enc(claims), "sig", sep = ".")
    }
    app$post("/api/token/", function(req, res) res$send_json(list(access = token(), refresh = "r"), auto_unbox = TRUE))
    app$get("/api/users/1/", function(req, res) res$send_json(list(id = 1, username = "alice", organization = 7), auto_unbox = TRUE))
    app$get("/api/organizations/", function(req, res) {
      res$send_json(list(count = 1, `next` = NULL, results = list(list(id = 7, name = "Hospital 7"))),
                    auto_unbox = TRUE, null = "null")
    })
    app$get("/api/tasks/1/", function(req, res) {
      if (req$app$locals$unavailable > 0) {
        req$app$locals$unavailable <- req$app$locals$unavailable - 1
        return(res$set_status(503L)$send("<html>503 Service Unavailable</html>"))
      }
      res$send_json(list(id = 1, status = status, collaboration = 3,
                         runs = list(list(id = 10, organization = 7, status = run_status))), auto_unbox = TRUE)
    })
    app
  }
  first <- webfakes::new_app_process(phase_app("active", "running"), start = TRUE)
  port <- first$get_port()
  writeLines(as.character(port), port_file)
  Sys.sleep(3)
  first$stop()
  Sys.sleep(2)
  second <- webfakes::new_app_process(phase_app("completed", "completed", unavailable = 2), port = port, start = TRUE)
  Sys.sleep(30)
  second$stop()
}

test_that("task_wait keeps waiting while the server restarts and returns the finished task", {
  port_file <- tempfile()
  server <- callr::r_bg(restarting_server, args = list(port_file = port_file))
  on.exit(server$kill(), add = TRUE)
  for (i in 1:100) if (file.exists(port_file) && length(readLines(port_file))) break else Sys.sleep(0.1)
  url <- sprintf("http://127.0.0.1:%s", readLines(port_file))
  conn <- vantage_login(url, "alice", "secret")
  seen <- character()
  done <- withCallingHandlers(
    task_wait(1, timeout = 30, interval = 0.5, conn = conn),
    message = function(m) {
      seen <<- c(seen, conditionMessage(m))
      invokeRestart("muffleMessage")
    }
  )
  expect_s3_class(done, "vantage_task")
  expect_equal(done$status, "completed")
  expect_true(any(grepl("run 10 at Hospital 7 running", seen)))
  expect_true(any(grepl("does not answer", seen)))
  expect_true(any(grepl("answers again", seen)))
  expect_true(any(grepl("run 10 at Hospital 7 completed", seen)))
  expect_equal(sum(grepl("does not answer", seen)), 1)   # said once per outage, not per poll
})

test_that("task_wait gives up at its timeout, saying the task's last status", {
  web <- webfakes::local_app_process(fake_api(), start = TRUE)
  conn <- vantage_login(web$url(), "alice", "secret")
  started <- Sys.time()
  expect_error(task_wait(2, timeout = 1.5, quiet = TRUE, conn = conn),
               "task 2 did not finish within 1.5 s \\(still active\\)", class = "vantage_error")
  expect_lt(as.numeric(difftime(Sys.time(), started, units = "secs")), 5)
})

test_that("an error other than a restart ends the wait at once", {
  web <- webfakes::local_app_process(fake_api(), start = TRUE)
  conn <- vantage_login(web$url(), "alice", "secret")
  expect_error(task_wait(99, timeout = 30, quiet = TRUE, conn = conn), "HTTP 404: Not found.", class = "vantage_http_404")
})
