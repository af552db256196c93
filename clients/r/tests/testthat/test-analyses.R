# The analyses end to end over HTTP against a fake server whose task results have the
# shape the reference algorithms give (algorithms/reference/cox.py, kaplan_meier.py):
# task creation, the wait, the result download and its SHA-256 check, the printing.
# The live tests check the numbers against survival on a real network.

library(survival)

cox_result <- function() {
  fit <- coxph(Surv(time, status) ~ age + sex, data = lung, ties = "breslow")
  b <- coef(fit)
  se <- sqrt(diag(vcov(fit)))
  list(type = "model", model = "cox_ph", n = fit$n, residual_df = fit$nevent - 2,
       variant = "stratified", ties = "breslow", events = fit$nevent, iterations = fit$iter, alpha = 0.05,
       loglik = fit$loglik[2], loglik_null = fit$loglik[1],
       covariance = lapply(1:2, function(i) vcov(fit)[i, ]),
       coefficients = lapply(1:2, function(i) list(
         covariate = names(b)[i], coef = b[[i]], se = se[[i]], z = b[[i]] / se[[i]],
         p = 2 * pnorm(-abs(b[[i]] / se[[i]])), hazard_ratio = exp(b[[i]]),
         hr_lower = exp(b[[i]] - 1.96 * se[[i]]), hr_upper = exp(b[[i]] + 1.96 * se[[i]]))))
}

km_result <- function() {
  curve <- function(shift) list(start = c(0, 100, 200), end = list(100, 200, NULL), at_risk = c(50, 30, 10),
                                events = c(10, 12, 3), censored = c(10, 8, 7),
                                survival = c(0.8, 0.48, 0.336) - shift, ci_lower = c(0.7, 0.35, 0.2) - shift,
                                ci_upper = c(0.88, 0.6, 0.47) - shift)
  list(type = "aggregate", n = 100, values = list(
    grid = list(cut_points = c(100, 200)), alpha = 0.05, overall = curve(0),
    groups = list(no = curve(0), yes = curve(0.05)),
    logrank = list(test_statistic = 3.2, degrees_of_freedom = 1, p_value = 0.0736, groups = list("no", "yes"))))
}

glm_result <- function() {
  fit <- glm(am ~ wt + hp, family = binomial, data = mtcars)
  b <- coef(fit)
  se <- sqrt(diag(vcov(fit)))
  list(type = "model", model = "logistic", n = 32, residual_df = 29, terms = list("intercept", "wt", "hp"),
       coefficients = unname(b), standard_errors = unname(se), z = unname(b / se), p_values = unname(2 * pnorm(-abs(b / se))),
       confidence = 0.95, ci_lower = unname(b - qnorm(0.975) * se), ci_upper = unname(b + qnorm(0.975) * se),
       odds_ratios = unname(exp(b)), loglik = as.numeric(logLik(fit)), iterations = fit$iter, converged = TRUE,
       covariance = lapply(1:3, function(i) unname(vcov(fit)[i, ])), organizations = list(7, 8))
}

# inline: the run list carries each result (as the server does for one kept in the run's
# row, ?with_result=true) and the download answers 500, so only the inline copy can serve.
analysis_api <- function(results, damaged = FALSE, inline = FALSE) {
  app <- webfakes::new_app()
  app$use(webfakes::mw_json())
  app$locals$results <- lapply(results, function(r) jsonlite::toJSON(r, auto_unbox = TRUE, digits = NA, null = "null"))
  app$locals$failing <- vapply(results, identical, TRUE, "fail")
  app$locals$damaged <- damaged
  app$locals$inline <- inline
  app$locals$next_task <- 0
  jwt <- jwt
  token <- jwt(list(user_id = 1, exp = as.numeric(Sys.time()) + 3600))
  json <- function(res, x, status = 200L) res$set_status(status)$send_json(x, auto_unbox = TRUE, null = "null")
  page <- function(items) list(count = length(items), `next` = NULL, previous = NULL, results = items)

  app$post("/api/token/", function(req, res) json(res, list(access = token, refresh = "r")))
  app$get(route("/api/users/:id/"), function(req, res) json(res, list(id = 1, username = "alice", organization = 7)))
  app$get("/api/organizations/", function(req, res) {
    json(res, page(list(list(id = 7, name = "Amsterdam UMC"), list(id = 8, name = "Leuven UZ"))))
  })
  app$get(route("/api/collaborations/:id/"), function(req, res) {
    json(res, list(id = 3, name = "GBSG2 demo", organizations = list(7, 8), encrypted = FALSE))
  })
  app$get("/api/algorithms/", function(req, res) {
    json(res, page(list(list(id = 4, name = "Cox", status = "approved", image = "r/cox",
                             functions = list(list(name = "cox", kind = "central"))),
                        list(id = 5, name = "KM", status = "approved", image = "r/km",
                             functions = list(list(name = "kaplan_meier", kind = "central"))),
                        list(id = 6, name = "Logistic", status = "approved", image = "r/logistic",
                             functions = list(list(name = "logistic", kind = "central"))))))
  })
  # Tasks 1.. answer with the scripted results in turn; a task whose result is "fail"
  # fails, with a subtask whose run at Leuven UZ failed.
  app$post("/api/tasks/", function(req, res) {
    req$app$locals$next_task <- req$app$locals$next_task + 1
    req$app$locals$created <- req$json
    json(res, list(id = req$app$locals$next_task, name = req$json$name, status = "pending", collaboration = 3,
                   method = req$json$method, runs = list()), 201L)
  })
  app$get(route("/api/tasks/:id/"), function(req, res) {
    id <- as.integer(req$params$id)
    if (id > 100) return(json(res, list(id = id, status = "failed", collaboration = 3, runs = list())))
    failed <- req$app$locals$failing[[id]]
    json(res, list(id = id, status = if (failed) "failed" else "completed", collaboration = 3, method = "cox",
                   runs = list(list(id = id * 10, organization = 7, status = if (failed) "failed" else "completed"))))
  })
  app$get("/api/tasks/", function(req, res) {
    parent <- as.integer(req$query[["parent"]] %||% 0)
    json(res, page(if (parent >= 1 && parent <= 100) list(list(id = parent + 100, parent = parent)) else list()))
  })
  app$get("/api/runs/", function(req, res) {
    task <- as.integer(req$query[["task"]])
    if (task > 100) {
      return(json(res, page(list(list(id = task * 10, task = task, organization = 8, status = "failed",
                                      error_kind = "algorithm", exit_code = 1)))))
    }
    failed <- req$app$locals$failing[[task]]
    run <- list(id = task * 10, task = task, organization = 7, status = if (failed) "failed" else "completed",
                exit_code = if (failed) 1 else 0, error_kind = if (failed) "algorithm" else "", result_size = 10)
    if (req$app$locals$inline && identical(req$query[["with_result"]], "true") && !failed) {
      body <- charToRaw(as.character(req$app$locals$results[[task]]))
      run$result <- openssl::base64_encode(body)
      run$result_sha256 <- paste(as.character(openssl::sha256(if (req$app$locals$damaged) c(body, as.raw(0)) else body)),
                                 collapse = "")
    }
    json(res, page(list(run)))
  })
  app$get(route("/api/runs/:id/"), function(req, res) {
    id <- as.integer(req$params$id)
    json(res, list(id = id, status = "failed", log = if (id > 1000) "starting\nKeyError: no column 'grade' in this site's data\n"
                                                    else "subtask failed", log_truncated = FALSE))
  })
  app$get(route("/api/runs/:id/result/"), function(req, res) {
    if (req$app$locals$inline) return(json(res, list(detail = "the inline copy should have served"), 500L))
    body <- charToRaw(as.character(req$app$locals$results[[as.integer(req$params$id) / 10]]))
    digest <- paste(as.character(openssl::sha256(if (req$app$locals$damaged) c(body, as.raw(0)) else body)), collapse = "")
    res$set_header("X-Content-SHA256", digest)$set_type("application/json")$send(body)
  })
  app$get("/created", function(req, res) json(res, req$app$locals$created))
  app
}

test_that("vantage_coxph creates one central task for the home organisation and prints like coxph", {
  web <- webfakes::local_app_process(analysis_api(list(cox_result())), start = TRUE)
  vantage_login(web$url(), "alice", "secret")
  use_collaboration(3, data = "gbsg2")
  fit <- vantage_coxph(Surv(time, status) ~ age + sex + strata(site), ties = "breslow", quiet = TRUE)
  created <- jsonlite::fromJSON(httr2::resp_body_string(httr2::req_perform(httr2::request(web$url("/created")))),
                                simplifyVector = FALSE)
  expect_equal(created$algorithm, 4)
  expect_equal(created$organizations[[1]]$id, 7)
  expect_equal(created$databases[[1]]$label, "gbsg2")
  input <- jsonlite::fromJSON(rawToChar(jsonlite::base64_dec(created$organizations[[1]]$input)), simplifyVector = FALSE)
  expect_equal(input$method, "cox")
  expect_equal(input$kwargs$covariates, list("age", "sex"))
  expect_equal(input$kwargs$ties, "breslow")
  expect_equal(input$kwargs$model, "stratified")

  reference <- coxph(Surv(time, status) ~ age + sex, data = lung, ties = "breslow")
  expect_equal(coef(fit), coef(reference))
  expect_equal(vcov(fit), vcov(reference), ignore_attr = TRUE)
  expect_equal(confint(fit), confint(reference))
  expect_output(print(fit), "coef exp\\(coef\\)\\s+se\\(coef\\)\\s+z\\s+p")
  expect_output(print(fit), sprintf("Likelihood ratio test=%s  on 2 df", format(round(2 * diff(reference$loglik), 2))))
  expect_output(print(fit), "n= 228, number of events= 165")
  s <- summary(fit)
  expect_equal(s$waldtest[["test"]], reference$wald.test)
  expect_equal(s$conf.int, summary(reference)$conf.int)
  expect_output(print(s), "Wald test\\s+= 1[0-9]\\.[0-9]+  on 2 df")
  expect_output(print(s), "exp\\(-coef\\) lower \\.95 upper \\.95")
})

test_that("vantage_survfit reads the released curves: print, summary(times =) and plot", {
  web <- webfakes::local_app_process(analysis_api(list(km_result())), start = TRUE)
  vantage_login(web$url(), "alice", "secret")
  use_collaboration(3)
  km <- vantage_survfit(Surv(time, cens) ~ horTh, quiet = TRUE)
  expect_equal(names(km$curves), c("horTh=no", "horTh=yes"))
  # median: the end of the interval reaching 0.5; its limits where the lower and upper bands do
  expect_output(print(km), "horTh=no\\s+50\\s+25\\s+200\\s+200\\s+NA")
  expect_output(print(km), "Log-rank test: Chisq= 3.2 on 1 degrees of freedom")
  at <- summary(km, times = c(50, 150, 250))$tables[["horTh=no"]]
  expect_equal(at$survival, c(1, 0.8, 0.48))
  expect_equal(at$n.risk, c(50, 30, 10))
  expect_equal(at$n.event, c(0, 10, 12))
  expect_output(print(summary(km, times = 150)), "lower 95% CI")
  path <- tempfile(fileext = ".png")
  grDevices::png(path)
  plot(km)
  grDevices::dev.off()
  expect_gt(file.size(path), 1000)
})

test_that("a failed analysis names each failing organisation, and errors() lists them", {
  web <- webfakes::local_app_process(analysis_api(list("fail")), start = TRUE)
  vantage_login(web$url(), "alice", "secret")
  use_collaboration(3)
  err <- tryCatch(vantage_coxph(Surv(time, cens) ~ grade, quiet = TRUE), vantage_error = function(e) e)
  expect_s3_class(err, "vantage_error")
  expect_match(conditionMessage(err), "task 1 ended failed: .*Leuven UZ: task 101, run 1010: failed, algorithm, exit code 1: starting \\| KeyError: no column 'grade'")
  found <- errors()
  expect_setequal(names(found), c("Amsterdam UMC", "Leuven UZ"))
  expect_output(print(found), "KeyError: no column 'grade'")
})

test_that("a result that arrives damaged is refused", {
  web <- webfakes::local_app_process(analysis_api(list(cox_result()), damaged = TRUE), start = TRUE)
  vantage_login(web$url(), "alice", "secret")
  use_collaboration(3)
  expect_error(vantage_coxph(Surv(time, status) ~ age, quiet = TRUE), "arrived damaged \\(SHA-256 mismatch\\)",
               class = "vantage_error")
})

test_that("a result inline in the run list is used as it is, and refused when damaged", {
  web <- webfakes::local_app_process(analysis_api(list(cox_result()), inline = TRUE), start = TRUE)
  vantage_login(web$url(), "alice", "secret")
  use_collaboration(3)
  fit <- vantage_coxph(Surv(time, status) ~ age + sex + strata(site), ties = "breslow", quiet = TRUE)
  reference <- coxph(Surv(time, status) ~ age + sex, data = lung, ties = "breslow")
  expect_equal(coef(fit), coef(reference))
  damaged <- webfakes::local_app_process(analysis_api(list(cox_result()), damaged = TRUE, inline = TRUE), start = TRUE)
  vantage_login(damaged$url(), "alice", "secret")
  use_collaboration(3)
  expect_error(vantage_coxph(Surv(time, status) ~ age, quiet = TRUE), "arrived damaged \\(SHA-256 mismatch\\)",
               class = "vantage_error")
})

test_that("vantage_glm sends the logistic method's input and prints like glm", {
  web <- webfakes::local_app_process(analysis_api(list(glm_result())), start = TRUE)
  vantage_login(web$url(), "alice", "secret")
  use_collaboration(3)
  fit <- vantage_glm(am ~ wt + hp, family = binomial, quiet = TRUE)
  created <- jsonlite::fromJSON(httr2::resp_body_string(httr2::req_perform(httr2::request(web$url("/created")))),
                                simplifyVector = FALSE)
  expect_equal(created$algorithm, 6)
  input <- jsonlite::fromJSON(rawToChar(jsonlite::base64_dec(created$organizations[[1]]$input)), simplifyVector = FALSE)
  expect_equal(input$kwargs[c("outcome", "covariates", "intercept")], list(outcome = "am", covariates = list("wt", "hp"), intercept = TRUE))
  reference <- glm(am ~ wt + hp, family = binomial, data = mtcars)
  expect_equal(unname(coef(fit)), unname(coef(reference)))
  expect_equal(names(coef(fit)), c("intercept", "wt", "hp"))
  expect_output(print(fit), "converged after")
  expect_output(print(summary(fit)), "Estimate Std. Error z value Pr\\(>\\|z\\|\\)")
  expect_output(print(summary(fit)), "odds ratio lower 95% upper 95%")
})
