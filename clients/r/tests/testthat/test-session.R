# Logging in, token refresh and the conditions HTTP failures become.

web <- webfakes::local_app_process(fake_api(), start = TRUE)

test_that("vantage_login stores the tokens and the user, and sends otp only when given", {
  conn <- vantage_login(web$url(), "alice", "secret")
  expect_s3_class(conn, "vantage_connection")
  expect_equal(conn$user$organization, 7)
  expect_null(last(web)$login$otp)
  expect_output(print(conn), "logged in as alice \\(organisation 7\\)")

  conn <- vantage_login(web$url(), "carol", "secret", otp = "123456")
  expect_equal(last(web)$login$otp, "123456")
})

test_that("a refused login is a vantage_error with the server's field message", {
  err <- tryCatch(vantage_login(web$url(), "carol", "secret"), vantage_error = function(e) e)
  expect_s3_class(err, "vantage_http_400")
  expect_equal(conditionMessage(err), "HTTP 400: otp: A one-time password is required.")
  expect_equal(err$fields$otp[[1]], "A one-time password is required.")

  err <- tryCatch(vantage_login(web$url(), "alice", "wrong"), vantage_error = function(e) e)
  expect_equal(err$status, 401L)
  expect_match(conditionMessage(err), "^HTTP 401: No active account found")
})

test_that("an access token the server refuses (401) is refreshed once and the request repeated", {
  before <- calls(web)$refresh %||% 0
  conn <- vantage_login(web$url(), "stale", "secret")   # the user read itself needed the refresh
  orgs <- organizations(conn)
  expect_equal(nrow(orgs), 7)
  expect_equal(calls(web)$refresh - before, 1)
  expect_equal(vantage:::token_claims(conn$access)$jti, "refreshed")
})

test_that("an access token close to its expiry is refreshed before it is used", {
  conn <- vantage_login(web$url(), "alice", "secret")
  conn$access <- jwt(list(user_id = 1, exp = as.numeric(Sys.time()) + 5, jti = "expiring"))
  before <- calls(web)$refresh %||% 0
  organizations(conn)
  expect_equal(calls(web)$refresh - before, 1)
})

test_that("a refresh token the server refuses ends the session with one clear message", {
  err <- tryCatch(vantage_login(web$url(), "stale", "secret") , vantage_error = function(e) e)
  expect_false(inherits(err, "vantage_error"))   # stale + a valid refresh token works
  conn <- vantage_login(web$url(), "alice", "secret")
  conn$access <- jwt(list(user_id = 1, exp = as.numeric(Sys.time()) + 3600, jti = "stale"))
  conn$refresh <- "revoked"
  err <- tryCatch(organizations(conn), vantage_error = function(e) e)
  expect_equal(conditionMessage(err), "the session expired: log in again")
  expect_equal(err$status, 401L)
})

test_that("404 and 403 answers keep their status and the server's words", {
  conn <- vantage_login(web$url(), "alice", "secret")
  missing <- tryCatch(task_status(99, conn = conn), vantage_error = function(e) e)
  expect_s3_class(missing, "vantage_http_404")
  expect_equal(conditionMessage(missing), "HTTP 404: Not found.")
  denied <- tryCatch(task_kill(5, conn = conn), vantage_error = function(e) e)
  expect_s3_class(denied, "vantage_http_403")
  expect_equal(conditionMessage(denied), "HTTP 403: You do not have permission to perform this action.")
  expect_error(task_status(99, conn = conn), "HTTP 404: Not found.", class = "vantage_error")
})

test_that("logout forgets the tokens: later calls say to log in", {
  conn <- vantage_login(web$url(), "alice", "secret")
  logout(conn)
  expect_error(organizations(), "not logged in", class = "vantage_error")
  expect_error(organizations(conn), "not logged in", class = "vantage_error")
})

test_that("a server that does not answer is a vantage_error without a status", {
  port <- web$get_port()
  dead <- webfakes::new_app_process(webfakes::new_app(), start = TRUE)
  url <- dead$url()
  dead$stop()
  err <- tryCatch(vantage_login(url, "alice", "secret"), vantage_error = function(e) e)
  expect_true(is.na(err$status))
  expect_match(conditionMessage(err), "^cannot reach http://127\\.0\\.0\\.1")
  expect_true(port > 0)
})
