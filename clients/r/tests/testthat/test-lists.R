# Listings follow the server's pagination to the end; task input and refusals.

web <- webfakes::local_app_process(fake_api(), start = TRUE)

test_that("organizations() follows `next` to the last page", {
  conn <- vantage_login(web$url(), "alice", "secret")
  before <- calls(web)$organizations %||% 0
  orgs <- organizations(conn)
  expect_s3_class(orgs, "vantage_table")
  expect_equal(orgs$id, 1:7)
  expect_equal(orgs$name[7], "Hospital 7")
  expect_equal(calls(web)$organizations - before, 3)
  expect_equal(last(web)$page_size, "500")
  expect_output(print(orgs), "Organisations \\(7\\)")
})

test_that("a pagination that loops is an error, not an endless loop", {
  conn <- vantage_login(web$url(), "alice", "secret")
  expect_error(vantage:::api_list(conn, "studies/"), "pagination of studies/ loops", class = "vantage_error")
})

test_that("task_create sends each organisation the method, args and kwargs as vantage6 reads them", {
  conn <- vantage_login(web$url(), "alice", "secret")
  err <- tryCatch(task_create("partial", kwargs = list(column = "age", columns = list("a")), collaboration = 3,
                              organizations = c(7, 8), image = "reg/alg@sha256:abc", data = "gbsg2", conn = conn),
                  vantage_error = function(e) e)
  expect_equal(conditionMessage(err), "HTTP 400: organizations: Organisations [8] are not members of collaboration 3.")
  body <- last(web)$task
  expect_equal(body$collaboration, 3)
  expect_equal(vapply(body$organizations, function(o) o$id, 0), c(7, 8))
  input <- jsonlite::fromJSON(rawToChar(jsonlite::base64_dec(body$organizations[[1]]$input)), simplifyVector = FALSE)
  expect_equal(input, list(method = "partial", args = list(), kwargs = list(column = "age", columns = list("a"))))
  expect_equal(body$databases[[1]]$label, "gbsg2")
  expect_equal(body$image, "reg/alg@sha256:abc")
})

test_that("an encrypted collaboration is refused with a clear message before anything is sent", {
  conn <- vantage_login(web$url(), "alice", "secret")
  expect_message(use_collaboration(9, conn = conn), "collaboration 9 is encrypted")
  expect_error(task_create("partial", organizations = 7, image = "x", conn = conn),
               "use the Python client", class = "vantage_error")
})

test_that("analyses check their formula before talking to the server", {
  conn <- vantage_login(web$url(), "alice", "secret")
  expect_error(vantage_coxph(time ~ age, conn = conn), "Surv\\(time, event\\)", class = "vantage_error")
  expect_error(vantage_coxph(Surv(time, cens) ~ age + strata(grade), conn = conn), "only strata\\(site\\)")
  expect_error(vantage_coxph(Surv(time, cens) ~ log(age), conn = conn), "plain column names")
  expect_error(vantage_glm(y ~ age, family = poisson, conn = conn), "binomial \\(logit link\\) only")
  expect_error(vantage_survfit(Surv(time, cens) ~ a + b, conn = conn), "one grouping column")
})
