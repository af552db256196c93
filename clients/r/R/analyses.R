# The reference analyses: one central task for the researcher's own organisation, whose
# method creates the sites' subtasks and combines their aggregates (algorithms/reference).

# Run a central method and return its one result; a task that does not complete raises
# a vantage_error naming each failing organisation's reason (errors()).
run_central <- function(method, kwargs, data, algorithm, timeout, quiet, conn, name) {
  home <- conn$user$organization
  if (is.null(home)) vantage_abort("your user belongs to no organisation, so it cannot start an analysis")
  task <- task_create(method, kwargs = kwargs, organizations = home, algorithm = algorithm,
                      data = data, name = name, conn = conn)
  if (!quiet) message(sprintf("task %d created (%s)", task$id, name))
  done <- task_wait(task$id, timeout = timeout, quiet = quiet, conn = conn)
  if (!identical(done$status, "completed")) {
    failures <- errors(task$id, conn = conn)
    why <- if (length(failures)) paste(sprintf("%s: %s", names(failures), vapply(failures, function(m) m[[1]], "")),
                                       collapse = "; ")
           else "no run reported a reason"
    vantage_abort(sprintf("task %d ended %s: %s (errors(%d) lists them)", task$id, done$status, why, task$id))
  }
  found <- results(task$id, conn = conn)
  if (length(found) != 1) vantage_abort(sprintf("task %d: expected one result, got %d", task$id, length(found)))
  list(task = task$id, result = found[[1]])
}

# The columns of `Surv(time, event)` on a formula's left-hand side.
surv_columns <- function(formula) {
  lhs <- if (length(formula) == 3) formula[[2]] else NULL
  if (!is.call(lhs) || !identical(as.character(lhs[[1]]), "Surv") || length(lhs) != 3 ||
      !is.name(lhs[[2]]) || !is.name(lhs[[3]])) {
    vantage_abort("the formula's left-hand side must be Surv(time, event), with two column names")
  }
  c(duration = as.character(lhs[[2]]), event = as.character(lhs[[3]]))
}

# Column names on a formula's right-hand side; strata(site) is taken out (every site is
# its own stratum on the server) and reported.
rhs_columns <- function(formula) {
  labels <- attr(stats::terms(formula, specials = "strata"), "term.labels")
  strata <- grepl("^strata\\(", labels)
  for (s in labels[strata]) {
    if (!identical(gsub("\\s", "", s), "strata(site)")) {
      vantage_abort(sprintf("%s: only strata(site) is possible (each site is one stratum on the server)", s))
    }
  }
  labels <- labels[!strata]
  bad <- labels[!grepl("^[.A-Za-z][.A-Za-z0-9_]*$", labels)]
  if (length(bad)) {
    vantage_abort(sprintf("only plain column names are possible on the right-hand side, not %s",
                          paste(bad, collapse = ", ")))
  }
  list(columns = labels, strata = any(strata))
}

num <- function(x) vapply(x, function(v) if (is.null(v)) NA_real_ else as.numeric(v), 0)

check_categories <- function(categories, covariates) {
  if (is.null(categories)) return(NULL)
  if (!is.list(categories) || is.null(names(categories)) || !all(names(categories) %in% covariates)) {
    vantage_abort("categories must be a named list of covariates' levels, reference first, e.g. list(horTh = c(\"no\", \"yes\"))")
  }
  lapply(categories, function(levels) as.list(as.character(levels)))
}

# ------------------------------------------------------------------ Cox

vantage_coxph <- function(formula, data = NULL, ties = c("efron", "breslow"), categories = NULL,
                          model = c("stratified", "common"), baseline = FALSE, alpha = 0.05,
                          algorithm = NULL, timeout = 900, quiet = FALSE, conn = vantage_connection()) {
  call <- match.call()
  ties <- match.arg(ties)
  model <- match.arg(model)
  surv <- surv_columns(formula)
  rhs <- rhs_columns(formula)
  if (!length(rhs$columns)) vantage_abort("name at least one covariate on the right-hand side")
  kwargs <- list(duration = surv[["duration"]], event = surv[["event"]], covariates = as.list(rhs$columns),
                 ties = ties, model = model, baseline = baseline, alpha = alpha)
  cats <- check_categories(categories, rhs$columns)
  if (!is.null(cats)) kwargs$categories <- cats
  run <- run_central("cox", kwargs, data, algorithm, timeout, quiet, conn,
                     sprintf("Cox: %s", paste(deparse(formula), collapse = " ")))
  new_coxph(run$result, call = call, formula = formula, task = run$task)
}

new_coxph <- function(r, call, formula, task) {
  rows <- r$coefficients
  names <- vapply(rows, function(x) x$covariate, "")
  pick <- function(field) setNames(num(lapply(rows, function(x) x[[field]])), names)
  covariance <- matrix(unlist(lapply(r$covariance, num)), nrow = length(names), byrow = TRUE,
                       dimnames = list(names, names))
  structure(list(
    coefficients = pick("coef"), se = pick("se"), z = pick("z"), p = pick("p"),
    var = covariance, loglik = c(r$loglik_null, r$loglik), n = r$n, nevent = r$events,
    iter = r$iterations, ties = r$ties, model = r$variant %||% r$model, alpha = r$alpha %||% 0.05,
    baseline = r$baseline_cumulative_hazard, call = call, formula = formula, task = task, result = r
  ), class = "vantage_coxph")
}

coef.vantage_coxph <- function(object, ...) object$coefficients
vcov.vantage_coxph <- function(object, ...) object$var

confint.vantage_coxph <- function(object, parm, level = 0.95, ...) {
  q <- qnorm(1 - (1 - level) / 2)
  b <- object$coefficients
  ci <- cbind(b - q * object$se, b + q * object$se)
  pct <- paste(format(100 * c((1 - level) / 2, 1 - (1 - level) / 2), trim = TRUE, scientific = FALSE, digits = 3), "%")
  dimnames(ci) <- list(names(b), pct)
  if (!missing(parm)) ci <- ci[parm, , drop = FALSE]
  ci
}

cox_tests <- function(x) {
  df <- length(x$coefficients)
  lr <- 2 * (x$loglik[2] - x$loglik[1])
  wald <- tryCatch(as.numeric(t(x$coefficients) %*% solve(x$var, x$coefficients)), error = function(e) NA_real_)
  list(logtest = c(test = lr, df = df, pvalue = pchisq(lr, df, lower.tail = FALSE)),
       waldtest = c(test = wald, df = df, pvalue = pchisq(wald, df, lower.tail = FALSE)))
}

format_p <- function(p) format.pval(p, digits = 3)

cox_header <- function(x) {
  cat("Call:\n")
  dput(x$call)
  cat("\n")
}

cox_footer_model <- function(x) {
  how <- if (identical(x$model, "stratified")) "stratified by site (one baseline hazard per organisation)"
         else "one baseline hazard for all sites"
  cat(sprintf("Federated fit, %s; %s ties; task %s\n", how, x$ties %||% "?", x$task))
}

print.vantage_coxph <- function(x, digits = max(1L, getOption("digits") - 3L), ...) {
  cox_header(x)
  table <- cbind(coef = x$coefficients, `exp(coef)` = exp(x$coefficients), `se(coef)` = x$se, z = x$z, p = x$p)
  printCoefmat(table, digits = digits, P.values = TRUE, has.Pvalue = TRUE, signif.stars = FALSE, ...)
  tests <- cox_tests(x)
  cat("\n")
  cat(sprintf("Likelihood ratio test=%s  on %d df, p=%s\n", format(round(tests$logtest[["test"]], 2)),
              as.integer(tests$logtest[["df"]]), format_p(tests$logtest[["pvalue"]])))
  cat(sprintf("n= %s, number of events= %s \n", x$n, x$nevent))
  cox_footer_model(x)
  invisible(x)
}

summary.vantage_coxph <- function(object, conf.int = 0.95, ...) {
  b <- object$coefficients
  q <- qnorm(1 - (1 - conf.int) / 2)
  coefficients <- cbind(coef = b, `exp(coef)` = exp(b), `se(coef)` = object$se, z = object$z, `Pr(>|z|)` = object$p)
  level <- format(100 * conf.int, trim = TRUE)
  ci <- cbind(exp(b), exp(-b), exp(b - q * object$se), exp(b + q * object$se))
  dimnames(ci) <- list(names(b), c("exp(coef)", "exp(-coef)", paste0("lower .", level), paste0("upper .", level)))
  tests <- cox_tests(object)
  structure(c(list(call = object$call, n = object$n, nevent = object$nevent, coefficients = coefficients,
                   conf.int = ci, loglik = object$loglik, model = object$model, ties = object$ties,
                   task = object$task), tests),
            class = "summary.vantage_coxph")
}

print.summary.vantage_coxph <- function(x, digits = max(getOption("digits") - 3L, 3L),
                                        signif.stars = getOption("show.signif.stars"), ...) {
  cox_header(x)
  cat(sprintf("  n= %s, number of events= %s \n\n", x$n, x$nevent))
  printCoefmat(x$coefficients, digits = digits, signif.stars = signif.stars, P.values = TRUE, has.Pvalue = TRUE, ...)
  cat("\n")
  print(x$conf.int, digits = digits)
  cat("\n")
  line <- function(label, test) {
    cat(sprintf("%s= %s  on %d df,   p=%s\n", label, format(round(test[["test"]], 2)), as.integer(test[["df"]]),
                format_p(test[["pvalue"]])))
  }
  line("Likelihood ratio test", x$logtest)
  line("Wald test            ", x$waldtest)
  cat("Score (logrank) test  not computed: the sites release no score at beta = 0\n")
  cox_footer_model(x)
  invisible(x)
}

# ------------------------------------------------------------------ Kaplan-Meier

vantage_survfit <- function(formula, data = NULL, grid = c("guarded", "exact"), cut_points = NULL, alpha = 0.05,
                            algorithm = NULL, timeout = 900, quiet = FALSE, conn = vantage_connection()) {
  call <- match.call()
  grid <- match.arg(grid)
  surv <- surv_columns(formula)
  rhs <- rhs_columns(formula)
  if (length(rhs$columns) > 1) vantage_abort("Kaplan-Meier curves take one grouping column: Surv(time, event) ~ group")
  kwargs <- list(duration = surv[["duration"]], event = surv[["event"]], grid = grid, alpha = alpha)
  if (length(rhs$columns)) kwargs$group <- rhs$columns
  if (!is.null(cut_points)) kwargs$cut_points <- as.list(as.numeric(cut_points))
  run <- run_central("kaplan_meier", kwargs, data, algorithm, timeout, quiet, conn,
                     sprintf("Kaplan-Meier: %s", paste(deparse(formula), collapse = " ")))
  new_survfit(run$result, call = call, group = if (length(rhs$columns)) rhs$columns else NULL, task = run$task)
}

new_survfit <- function(r, call, group, task) {
  v <- r$values
  curve <- function(c) {
    data.frame(start = num(c$start), end = num(c$end), n.risk = num(c$at_risk), n.event = num(c$events),
               n.censor = num(c$censored), surv = num(c$survival), lower = num(c$ci_lower), upper = num(c$ci_upper))
  }
  curves <- if (!is.null(group) && !is.null(v$groups)) {
    setNames(lapply(v$groups, curve), paste0(group, "=", names(v$groups)))
  } else {
    list(all = curve(v$overall))
  }
  structure(list(curves = curves, cut_points = num(v$grid$cut_points), grid = v$grid, alpha = v$alpha %||% 0.05,
                 logrank = v$logrank, n = r$n, call = call, group = group, task = task, result = r),
            class = "vantage_survfit")
}

# The first interval end by which the curve (or a band) has fallen to 0.5 or below.
first_below <- function(end, values) {
  hit <- which(!is.na(values) & values <= 0.5 & !is.na(end))
  if (length(hit)) end[hit[1]] else NA_real_
}

print.vantage_survfit <- function(x, digits = max(1L, getOption("digits") - 3L), ...) {
  cat("Call: ")
  dput(x$call)
  cat("\n")
  level <- format(100 * (1 - x$alpha))
  rows <- t(vapply(x$curves, function(c) {
    c(n = c$n.risk[1], events = sum(c$n.event), median = first_below(c$end, c$surv),
      lcl = first_below(c$end, c$lower), ucl = first_below(c$end, c$upper))
  }, numeric(5)))
  colnames(rows) <- c("n", "events", "median", paste0("0.", level, "LCL"), paste0("0.", level, "UCL"))
  print(rows, digits = digits)
  cat(sprintf("\nTimes grouped into %d intervals (%s grid); medians are interval ends.\n",
              length(x$cut_points) + 1, x$grid$grid %||% "released"))
  if (!is.null(x$logrank)) {
    cat(sprintf("Log-rank test: Chisq= %s on %d degrees of freedom, p= %s\n",
                format(round(x$logrank$test_statistic, 1)), as.integer(x$logrank$degrees_of_freedom),
                format_p(x$logrank$p_value)))
  }
  invisible(x)
}

# Survival at `time`: the value after the last interval that ends by then.
step_at <- function(curve, time) {
  done <- which(!is.na(curve$end) & curve$end <= time)
  if (!length(done)) return(c(surv = 1, lower = 1, upper = 1))
  last <- done[length(done)]
  c(surv = curve$surv[last], lower = curve$lower[last], upper = curve$upper[last])
}

summary.vantage_survfit <- function(object, times = NULL, ...) {
  tables <- lapply(object$curves, function(c) {
    if (is.null(times)) {
      keep <- c$n.event > 0 & !is.na(c$end)
      return(data.frame(time = c$end[keep], n.risk = c$n.risk[keep], n.event = c$n.event[keep],
                        survival = c$surv[keep], lower = c$lower[keep], upper = c$upper[keep]))
    }
    times <- sort(as.numeric(times))
    previous <- -Inf
    rows <- lapply(times, function(t) {
      inside <- which(c$start <= t & (is.na(c$end) | c$end > t))
      ended <- which(!is.na(c$end) & c$end > previous & c$end <= t)
      previous <<- t
      s <- step_at(c, t)
      data.frame(time = t, n.risk = if (length(inside)) c$n.risk[inside[1]] else 0, n.event = sum(c$n.event[ended]),
                 survival = s[["surv"]], lower = s[["lower"]], upper = s[["upper"]])
    })
    do.call(rbind, rows)
  })
  structure(list(tables = tables, alpha = object$alpha, call = object$call, times = times),
            class = "summary.vantage_survfit")
}

print.summary.vantage_survfit <- function(x, digits = max(getOption("digits") - 4L, 3L), ...) {
  cat("Call: ")
  dput(x$call)
  level <- format(100 * (1 - x$alpha))
  for (name in names(x$tables)) {
    table <- x$tables[[name]]
    names(table)[5:6] <- c(paste0("lower ", level, "% CI"), paste0("upper ", level, "% CI"))
    cat("\n")
    if (length(x$tables) > 1 || name != "all") cat("               ", name, "\n")
    print(table, digits = digits, row.names = FALSE)
  }
  cat("\n(survival just after each interval's events; an interval's events are released together)\n")
  invisible(x)
}

# Steps at the grid's interval ends, as released: within an interval no time is known.
plot.vantage_survfit <- function(x, conf.int = TRUE, col = seq_along(x$curves), lty = 1, xlab = "Time",
                                 ylab = "Survival probability", ylim = c(0, 1), legend = length(x$curves) > 1,
                                 ...) {
  col <- rep_len(col, length(x$curves))
  lty <- rep_len(lty, length(x$curves))
  ends <- unlist(lapply(x$curves, function(c) c$end[!is.na(c$end)]))
  # The last interval has no end: the value after the last finite one is held a little
  # past it, so the final step shows.
  right <- max(c(ends, 1)) * 1.1
  plot(NA, xlim = c(0, right), ylim = ylim, xlab = xlab, ylab = ylab, ...)
  for (i in seq_along(x$curves)) {
    c <- x$curves[[i]]
    keep <- !is.na(c$end)
    time <- c(0, c$end[keep], right)
    held <- function(values) c(1, values[keep], utils::tail(values[keep], 1))
    lines(time, held(c$surv), type = "s", col = col[i], lty = lty[i])
    if (conf.int) {
      lines(time, held(c$lower), type = "s", col = col[i], lty = 2)
      lines(time, held(c$upper), type = "s", col = col[i], lty = 2)
    }
  }
  graphics::rug(x$cut_points, ticksize = 0.02)
  if (legend) graphics::legend("bottomleft", legend = names(x$curves), col = col, lty = lty, bty = "n")
  invisible(x)
}

# ------------------------------------------------------------------ summary statistics

vantage_summary <- function(columns = NULL, categorical = NULL, data = NULL, algorithm = NULL, timeout = 900,
                            quiet = FALSE, conn = vantage_connection()) {
  kwargs <- list()
  if (!is.null(columns)) kwargs$columns <- as.list(c(columns, setdiff(categorical, columns)))
  if (!is.null(categorical)) kwargs$categorical <- as.list(categorical)
  run <- run_central("summary", kwargs, data, algorithm, timeout, quiet, conn, "summary statistics")
  r <- run$result
  structure(list(columns = r$values$columns, organizations = unlist(r$values$organizations), n = r$n,
                 task = run$task, result = r), class = "vantage_summary")
}

print.vantage_summary <- function(x, digits = max(3L, getOption("digits") - 3L), ...) {
  cat(sprintf("Federated summary of %s rows at %d organisation(s) (task %s)\n", x$n, length(x$organizations), x$task))
  numeric <- Filter(function(c) identical(c$kind, "numeric"), x$columns)
  if (length(numeric)) {
    table <- t(vapply(numeric, function(c) {
      c(n = num(list(c$n)), missing = num(list(c$missing)), mean = num(list(c$mean)), sd = num(list(c$std)))
    }, numeric(4)))
    cat("\n")
    print(table, digits = digits)
    withheld <- names(numeric)[!vapply(numeric, function(c) is.null(c$withheld), TRUE)]
    if (length(withheld)) cat("withheld (too few values at a site):", paste(withheld, collapse = ", "), "\n")
  }
  for (name in names(x$columns)) {
    c <- x$columns[[name]]
    if (!identical(c$kind, "categorical")) next
    counts <- vapply(c$counts, function(n) if (is.null(n)) "suppressed" else format(n), "")
    cat(sprintf("\n%s (missing %s): %s", name, c$missing, paste(paste0(unlist(c$levels), ": ", counts), collapse = ", ")))
  }
  cat("\n")
  invisible(x)
}

# ------------------------------------------------------------------ logistic regression

vantage_glm <- function(formula, family = stats::binomial, levels = NULL, data = NULL, confidence = 0.95,
                        algorithm = NULL, timeout = 900, quiet = FALSE, conn = vantage_connection()) {
  call <- match.call()
  if (is.function(family)) family <- family()
  if (!inherits(family, "family") || family$family != "binomial" || family$link != "logit") {
    vantage_abort("vantage_glm fits family = binomial (logit link) only: the server's reference method is logistic regression")
  }
  if (length(formula) != 3 || !is.name(formula[[2]])) vantage_abort("the formula's left-hand side must be one 0/1 column")
  rhs <- rhs_columns(formula)
  if (rhs$strata) vantage_abort("strata() has no meaning in vantage_glm")
  if (!length(rhs$columns)) vantage_abort("name at least one covariate on the right-hand side")
  intercept <- attr(stats::terms(formula), "intercept") == 1
  kwargs <- list(outcome = as.character(formula[[2]]), covariates = as.list(rhs$columns), intercept = intercept,
                 confidence = confidence)
  lv <- check_categories(levels, rhs$columns)
  if (!is.null(lv)) kwargs$levels <- lv
  run <- run_central("logistic", kwargs, data, algorithm, timeout, quiet, conn,
                     sprintf("logistic: %s", paste(deparse(formula), collapse = " ")))
  r <- run$result
  terms <- unlist(r$terms)
  named <- function(x) setNames(num(x), terms)
  structure(list(
    coefficients = named(r$coefficients), se = named(r$standard_errors), z = named(r$z), p = named(r$p_values),
    ci_lower = named(r$ci_lower), ci_upper = named(r$ci_upper),
    var = matrix(unlist(lapply(r$covariance, num)), nrow = length(terms), byrow = TRUE, dimnames = list(terms, terms)),
    loglik = r$loglik, n = r$n, df.residual = r$residual_df, iter = r$iterations, converged = isTRUE(r$converged),
    confidence = r$confidence %||% confidence, call = call, task = run$task, result = r
  ), class = "vantage_glm")
}

coef.vantage_glm <- function(object, ...) object$coefficients
vcov.vantage_glm <- function(object, ...) object$var

print.vantage_glm <- function(x, digits = max(3L, getOption("digits") - 3L), ...) {
  cat("\nCall:  ")
  dput(x$call)
  cat("\nCoefficients:\n")
  print.default(format(x$coefficients, digits = digits), print.gap = 2L, quote = FALSE)
  cat(sprintf("\nn = %s, residual df = %s, log-likelihood = %s, %s after %s iterations (task %s)\n", x$n,
              x$df.residual, format(signif(x$loglik, digits + 2)), if (x$converged) "converged" else "NOT converged",
              x$iter, x$task))
  invisible(x)
}

summary.vantage_glm <- function(object, ...) {
  object$coef_table <- cbind(Estimate = object$coefficients, `Std. Error` = object$se, `z value` = object$z,
                             `Pr(>|z|)` = object$p)
  level <- format(100 * object$confidence)
  object$odds <- cbind(`odds ratio` = exp(object$coefficients), exp(object$ci_lower), exp(object$ci_upper))
  colnames(object$odds)[2:3] <- paste0(c("lower ", "upper "), level, "%")
  class(object) <- "summary.vantage_glm"
  object
}

print.summary.vantage_glm <- function(x, digits = max(3L, getOption("digits") - 3L),
                                      signif.stars = getOption("show.signif.stars"), ...) {
  cat("\nCall:\n")
  dput(x$call)
  cat("\nCoefficients:\n")
  printCoefmat(x$coef_table, digits = digits, signif.stars = signif.stars, P.values = TRUE, has.Pvalue = TRUE)
  cat("\n(Dispersion parameter for binomial family taken to be 1)\n\n")
  print(x$odds, digits = digits)
  cat(sprintf("\n    Log-likelihood: %s on %s residual degrees of freedom (n = %s)\n",
              format(signif(x$loglik, digits + 2)), x$df.residual, x$n))
  cat(sprintf("Newton-Raphson iterations: %s (%s); task %s\n", x$iter, if (x$converged) "converged" else "not converged", x$task))
  invisible(x)
}
