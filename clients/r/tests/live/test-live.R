# Live tests: the R client against a real server and the demo's three hospital nodes
# running real algorithm containers. tests/rclient/test_r_client.py starts that network
# and runs this file with testthat; the variables below tell where it is.
#   VANTAGE_URL, VANTAGE_USERNAME, VANTAGE_PASSWORD, VANTAGE_COLLABORATION,
#   VANTAGE_DATABASE (the nodes' data label), VANTAGE_DATA_DIR (the sites' CSV files,
#   for the pooled reference only).

library(testthat)
library(survival)
library(vantage)

env <- function(name) {
  value <- Sys.getenv(name)
  if (!nzchar(value)) stop(sprintf("%s is not set: run these tests through tests/rclient/test_r_client.py", name))
  value
}

conn <- vantage_login(env("VANTAGE_URL"), env("VANTAGE_USERNAME"), env("VANTAGE_PASSWORD"))
use_collaboration(as.integer(env("VANTAGE_COLLABORATION")), data = env("VANTAGE_DATABASE"))

# The pooled data, each file one site, read only to compute the reference fits.
pooled <- local({
  files <- list.files(env("VANTAGE_DATA_DIR"), pattern = "\\.csv$", full.names = TRUE)
  frames <- lapply(files, function(f) cbind(read.csv(f, stringsAsFactors = FALSE), site = sub("\\.csv$", "", basename(f))))
  data <- do.call(rbind, frames)
  data$horTh <- factor(data$horTh, levels = c("no", "yes"))
  data$menostat <- factor(data$menostat, levels = c("Pre", "Post"))
  data$tgrade <- factor(data$tgrade, levels = c("I", "II", "III"))
  data
})
# Absolute agreement: the largest difference, named in the failure message.
expect_close <- function(actual, expected, tolerance = 1e-8) {
  worst <- max(abs(unname(actual) - unname(expected)))
  expect(is.finite(worst) && worst <= tolerance,
         sprintf("largest difference %.3g exceeds %.1g (%d values)", worst, tolerance, length(expected)))
}

# Each analysis's wall time on stderr, to keep the live suite's cost visible.
timed <- function(label, expr) {
  started <- Sys.time()
  value <- expr
  message(sprintf("timing: %s %.1f s", label, as.numeric(difftime(Sys.time(), started, units = "secs"))))
  value
}

# What an R user sees, on stderr for the pytest report (-rP).
show_output <- function(x) message(paste0("output: ", utils::capture.output(print(x)), collapse = "\n"))

categories <- list(horTh = c("no", "yes"), menostat = c("Pre", "Post"), tgrade = c("I", "II", "III"))

test_that("the three nodes are online and the catalogue offers the reference methods", {
  found <- nodes()
  expect_equal(nrow(found), 3)
  expect_true(all(found$status == "online"))
  catalogue <- algorithms()
  expect_true(any(grepl("cox", catalogue$methods)))
  expect_output(print(catalogue), "cox \\(central\\): duration, event, covariates")
})

test_that("the federated Cox model stratified by site equals survival::coxph with strata(site)", {
  fit <- timed("cox (breslow)", vantage_coxph(Surv(time, cens) ~ horTh + age + menostat + tsize + tgrade + pnodes + progrec + estrec +
                         strata(site), ties = "breslow", categories = categories, quiet = TRUE))
  reference <- coxph(Surv(time, cens) ~ horTh + age + menostat + tsize + tgrade + pnodes + progrec + estrec +
                       strata(site), data = pooled, ties = "breslow")
  expect_equal(gsub("\\[|\\]", "", names(coef(fit))), names(coef(reference)))
  expect_close(unname(coef(fit)), unname(coef(reference)))
  expect_close(unname(fit$se), unname(sqrt(diag(vcov(reference)))))
  expect_equal(fit$n, reference$n)
  expect_equal(fit$nevent, reference$nevent)
  expect_close(fit$loglik, reference$loglik)
  # The likelihood-ratio and Wald tests as survival reports them.
  ours <- summary(fit)
  expect_close(ours$logtest[["test"]], 2 * diff(reference$loglik), 1e-7)
  expect_close(ours$waldtest[["test"]], reference$wald.test, 1e-6)
  expect_output(print(fit), "Likelihood ratio test=104.09  on 9 df")
  show_output(fit)
  expect_output(print(fit), "n= 686, number of events= 299")
  expect_output(print(ours), "exp\\(-coef\\) lower \\.95 upper \\.95")
  expect_length(results(fit$task), 1)
})

test_that("the federated Kaplan-Meier curves equal survival::survfit at the released times", {
  # Proposed cut points at 1, 3 and 5 years: the sites still check every interval against
  # their policies, in a few rounds rather than the dozen a search over 30 candidates
  # takes (test_demo_network covers the search).
  km <- timed("kaplan-meier", vantage_survfit(Surv(time, cens) ~ horTh, cut_points = c(365, 1095, 1825), quiet = TRUE))
  cuts <- km$cut_points
  expect_equal(cuts, c(365, 1095, 1825))
  # The released curve is the Kaplan-Meier estimate of the pooled patients with each time
  # replaced by its grid interval ([cut_k, cut_k+1), as the sites count them).
  grouped <- pooled
  grouped$interval <- findInterval(grouped$time, cuts)
  reference <- survfit(Surv(interval, cens) ~ horTh, data = grouped, conf.type = "log-log")
  for (level in c("no", "yes")) {
    curve <- km$curves[[paste0("horTh=", level)]]
    ref <- summary(reference[paste0("horTh=", level)], times = seq_along(cuts) - 1, extend = TRUE)
    expect_close(curve$surv[seq_along(cuts)], ref$surv)
    expect_close(curve$lower[seq_along(cuts)], ref$lower)
    expect_close(curve$upper[seq_along(cuts)], ref$upper)
    expect_equal(curve$n.risk[seq_along(cuts)], ref$n.risk)
    # summary(times =) at the released times reads the same step function.
    at <- summary(km, times = cuts)$tables[[paste0("horTh=", level)]]
    expect_close(at$survival, ref$surv)
  }
  expect_close(km$logrank$test_statistic, survdiff(Surv(interval, cens) ~ horTh, data = grouped)$chisq, 1e-8)
  expect_output(print(km), "horTh=no")
  show_output(km)
  path <- tempfile(fileext = ".png")
  png(path)
  plot(km)
  dev.off()
  expect_gt(file.size(path), 1000)
})

test_that("the federated summary matches the pooled means and counts", {
  s <- timed("summary", vantage_summary(columns = c("age", "tsize"), categorical = "horTh", quiet = TRUE))
  expect_equal(s$columns$age$mean, mean(pooled$age), tolerance = 1e-10)
  expect_equal(s$columns$tsize$std, sd(pooled$tsize), tolerance = 1e-10)
  expect_equal(unlist(s$columns$horTh$counts), as.vector(table(pooled$horTh)))
  expect_output(print(s), "horTh \\(missing 0\\): no: 440, yes: 246")
})

test_that("a failing analysis raises the sites' reasons and errors() names each organisation", {
  err <- timed("failing cox", tryCatch(vantage_coxph(Surv(time, cens) ~ no_such_column, quiet = TRUE),
                                       vantage_error = function(e) e))
  expect_s3_class(err, "vantage_error")
  expect_match(conditionMessage(err), "no_such_column")
  failures <- errors()
  expect_gte(length(failures), 1)
  expect_true(all(names(failures) %in% organizations()$name))
  expect_output(print(failures), "no_such_column")
})

test_that("tasks(), task_status(), results() and run_log() read a finished task", {
  listed <- tasks()
  expect_true(nrow(listed) >= 1)
  done <- task_status(listed$id[listed$status == "completed"][1])
  expect_equal(done$status, "completed")
  expect_output(print(done), "completed")
  out <- results(done)
  expect_s3_class(out, "vantage_results")
  expect_output(print(run_log(done$runs[[1]]$id)), "Log of run")
})
