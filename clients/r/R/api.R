# The researcher's functions: session, listings, tasks, results and failures.

FINAL_TASK_STATUSES <- c("completed", "failed", "killed")
FAILED_RUN_STATUSES <- c("failed", "crashed", "killed", "rejected", "timed_out")

# ------------------------------------------------------------------ session

vantage_login <- function(url, username, password, otp = NULL, timeout = 30) {
  conn <- new_connection(url, timeout = timeout)
  body <- list(username = username, password = password)
  # The server asks for a one-time password when the account has a second factor.
  if (!is.null(otp)) body$otp <- as.character(otp)
  tokens <- send(conn, "POST", "token/", body = body, auth = FALSE)
  conn$access <- tokens$access
  conn$refresh <- tokens$refresh
  user_id <- token_claims(conn$access)$user_id
  if (is.null(user_id)) vantage_abort("the access token names no user")
  conn$user <- api_get(conn, sprintf("users/%s/", user_id))
  .state$conn <- conn
  .state$last_task <- NULL
  invisible(conn)
}

# The server keeps no session to end (JWTs expire by themselves): logging out forgets the
# tokens here, so nothing in this R session can use them again.
logout <- function(conn = vantage_connection()) {
  conn$access <- NULL
  conn$refresh <- NULL
  conn$user <- NULL
  if (identical(.state$conn, conn)) .state$conn <- NULL
  invisible(NULL)
}

# ------------------------------------------------------------------ tables

# A data frame of plain columns (one row per object) that prints without row names.
as_table <- function(items, columns, title) {
  cols <- lapply(columns, function(f) {
    values <- lapply(items, f)
    if (all(vapply(values, function(v) length(v) == 1 && (is.numeric(v) || is.logical(v)), TRUE)) &&
        length(values)) {
      unlist(values)
    } else {
      vapply(values, function(v) if (is.null(v) || !length(v)) NA_character_ else paste(v, collapse = ", "), "")
    }
  })
  frame <- as.data.frame(cols, stringsAsFactors = FALSE, check.names = FALSE)
  if (!length(items)) frame <- frame[0, , drop = FALSE]
  structure(frame, class = c("vantage_table", "data.frame"), title = title)
}

print.vantage_table <- function(x, ...) {
  title <- attr(x, "title")
  if (!is.null(title)) cat(title, " (", nrow(x), ")\n", sep = "")
  if (nrow(x)) print.data.frame(x, row.names = FALSE, right = FALSE, ...)
  extra <- attr(x, "details")
  if (!is.null(extra)) cat(extra, sep = "\n")
  invisible(x)
}

organization_names <- function(conn) {
  if (is.null(conn$org_names)) {
    orgs <- api_list(conn, "organizations/")
    conn$org_names <- setNames(vapply(orgs, function(o) o$name, ""), vapply(orgs, function(o) as.character(o$id), ""))
  }
  conn$org_names
}

org_name <- function(conn, id) {
  names <- organization_names(conn)
  found <- names[as.character(id)]
  ifelse(is.na(found), paste("organisation", id), found)
}

organizations <- function(conn = vantage_connection()) {
  orgs <- api_list(conn, "organizations/")
  conn$org_names <- setNames(vapply(orgs, function(o) o$name, ""), vapply(orgs, function(o) as.character(o$id), ""))
  as_table(orgs, list(id = function(o) o$id, name = function(o) o$name, country = function(o) o$country,
                      public_key = function(o) nzchar(o$public_key %||% "")),
           "Organisations")
}

collaborations <- function(conn = vantage_connection()) {
  items <- api_list(conn, "collaborations/")
  as_table(items, list(id = function(c) c$id, name = function(c) c$name,
                       organizations = function(c) unlist(c$organizations),
                       encrypted = function(c) isTRUE(c$encrypted), status = function(c) c$status),
           "Collaborations")
}

current_collaboration <- function(conn, collaboration = NULL) {
  if (!is.null(collaboration)) return(as_id(collaboration, "a collaboration id"))
  if (is.null(conn$collaboration)) {
    vantage_abort("no collaboration chosen: call use_collaboration(id or name) first, or give collaboration =")
  }
  conn$collaboration$id
}

nodes <- function(collaboration = NULL, conn = vantage_connection()) {
  id <- if (is.null(collaboration) && is.null(conn$collaboration)) NULL else current_collaboration(conn, collaboration)
  items <- api_list(conn, "nodes/", list(collaboration = id))
  as_table(items, list(id = function(n) n$id, name = function(n) n$name,
                       organization = function(n) org_name(conn, n$organization),
                       collaboration = function(n) n$collaboration, status = function(n) n$status,
                       last_seen = function(n) n$last_seen_at),
           "Nodes")
}

# The catalogue: one row per algorithm, and below the table each one's methods with
# their arguments (required ones first, then those with defaults).
algorithms <- function(status = NULL, conn = vantage_connection()) {
  items <- api_list(conn, "algorithms/", list(status = status))
  table <- as_table(items, list(id = function(a) a$id, name = function(a) a$name, status = function(a) a$status,
                                methods = function(a) vapply(a$functions %||% list(), function(f) f$name, ""),
                                image = function(a) a$image),
                    "Algorithms")
  details <- character()
  for (a in items) {
    for (f in a$functions %||% list()) {
      props <- f$arguments$properties %||% list()
      required <- unlist(f$arguments$required %||% list())
      args <- vapply(names(props), function(p) {
        if (p %in% required) p
        else paste0(p, "=", if (is.null(props[[p]]$default)) "NULL" else format(props[[p]]$default))
      }, "")
      details <- c(details, sprintf("  %d %s (%s): %s", a$id, f$name, f$kind %||% "?", paste(args, collapse = ", ")))
    }
  }
  if (length(details)) attr(table, "details") <- c("Methods and arguments:", details)
  attr(table, "functions") <- setNames(lapply(items, function(a) a$functions), vapply(items, function(a) a$name, ""))
  table
}

use_collaboration <- function(collaboration, data = "default", conn = vantage_connection()) {
  if (is.character(collaboration)) {
    found <- Filter(function(c) identical(c$name, collaboration), api_list(conn, "collaborations/"))
    if (!length(found)) vantage_abort(sprintf("no collaboration named \"%s\" is visible to you", collaboration))
    chosen <- found[[1]]
  } else {
    chosen <- api_get(conn, sprintf("collaborations/%d/", as_id(collaboration, "a collaboration id")))
  }
  conn$collaboration <- chosen
  conn$database <- data
  conn$encrypted[[as.character(chosen$id)]] <- isTRUE(chosen$encrypted)
  if (isTRUE(chosen$encrypted)) {
    message(encrypted_refusal(chosen$id))
  }
  invisible(conn)
}

# r-cran-openssl (2.0.5 in Debian bookworm) offers RSA encryption with PKCS#1 v1.5 padding
# only and AES-GCM without associated data; the envelope needs RSA-OAEP with SHA-256 and
# GCM over the header. Rather than hand-roll either, the R client refuses the collaboration.
encrypted_refusal <- function(id) {
  sprintf(paste("collaboration %d is encrypted: the R client cannot seal inputs or open results",
                "(it needs RSA-OAEP-SHA256 and AES-256-GCM with associated data, which the R openssl",
                "package does not offer); use the Python client (client/) for this collaboration"), id)
}

refuse_encrypted <- function(conn, collaboration_id) {
  key <- as.character(collaboration_id)
  if (is.null(conn$encrypted[[key]])) {
    conn$encrypted[[key]] <- isTRUE(api_get(conn, sprintf("collaborations/%s/", key))$encrypted)
  }
  if (conn$encrypted[[key]]) vantage_abort(encrypted_refusal(collaboration_id))
}

# ------------------------------------------------------------------ tasks

new_task <- function(task, conn) {
  task$runs <- task$runs %||% list()
  structure(task, class = "vantage_task", conn = conn)
}

print.vantage_task <- function(x, ...) {
  conn <- attr(x, "conn")
  cat(sprintf("<vantage task %d \"%s\": %s>\n", x$id, x$name %||% "", x$status))
  cat(sprintf("  method %s, collaboration %s, created %s\n", x$method %||% "?", x$collaboration, x$created_at %||% "?"))
  for (run in x$runs) {
    who <- if (is.null(conn)) paste("organisation", run$organization) else org_name(conn, run$organization)
    cat(sprintf("  run %d  %-28s %s\n", run$id, who, run$status))
  }
  invisible(x)
}

# A catalogue algorithm answering `method` as a central function: the newest approved entry.
find_algorithm <- function(conn, method, algorithm = NULL) {
  if (is.numeric(algorithm)) return(as_id(algorithm, "an algorithm id"))
  items <- api_list(conn, "algorithms/", list(status = "approved"))
  if (is.character(algorithm)) {
    items <- Filter(function(a) identical(a$name, algorithm), items)
    if (!length(items)) vantage_abort(sprintf("no approved algorithm named \"%s\" in the catalogue", algorithm))
  } else {
    items <- Filter(function(a) any(vapply(a$functions %||% list(), function(f) identical(f$name, method), TRUE)),
                    items)
    if (!length(items)) {
      vantage_abort(sprintf("no approved algorithm in the catalogue answers the method \"%s\"", method))
    }
  }
  max(vapply(items, function(a) as.integer(a$id), 1L))
}

# R values to the JSON an algorithm reads: a vector of length one becomes a scalar, so
# give lists (or I()) for arguments that must stay arrays.
input_json <- function(method, args, kwargs) {
  payload <- list(method = method, args = as.list(args), kwargs = if (length(kwargs)) kwargs else structure(list(), names = character()))
  jsonlite::toJSON(payload, auto_unbox = TRUE, null = "null", digits = NA)
}

task_create <- function(method, kwargs = list(), args = list(), organizations = NULL, algorithm = NULL,
                        image = NULL, data = NULL, name = method, description = "", study = NULL,
                        collaboration = NULL, conn = vantage_connection()) {
  collaboration_id <- current_collaboration(conn, collaboration)
  refuse_encrypted(conn, collaboration_id)
  if (is.null(organizations)) {
    collab <- if (!is.null(conn$collaboration) && conn$collaboration$id == collaboration_id) conn$collaboration
              else api_get(conn, sprintf("collaborations/%d/", collaboration_id))
    organizations <- unlist(collab$organizations)
  }
  organizations <- vapply(as.list(organizations), as_id, 1L, what = "an organisation id")
  if (!length(organizations)) vantage_abort("name at least one organisation")
  input <- jsonlite::base64_enc(charToRaw(input_json(method, args, kwargs)))
  body <- list(
    collaboration = collaboration_id, name = name, description = description, method = method,
    organizations = lapply(organizations, function(org) list(id = org, input = gsub("\n", "", input))),
    databases = lapply(as.list(data %||% conn$database), function(label) list(label = label))
  )
  if (!is.null(image)) body$image <- image else body$algorithm <- find_algorithm(conn, method, algorithm)
  if (!is.null(study)) body$study <- as_id(study, "a study id")
  task <- send(conn, "POST", "tasks/", body = body)
  .state$last_task <- task$id
  new_task(task, conn)
}

tasks <- function(collaboration = NULL, status = NULL, conn = vantage_connection()) {
  id <- if (is.null(collaboration) && is.null(conn$collaboration)) NULL else current_collaboration(conn, collaboration)
  items <- api_list(conn, "tasks/", list(collaboration = id, status = status))
  as_table(items, list(id = function(t) t$id, name = function(t) t$name, method = function(t) t$method,
                       status = function(t) t$status, parent = function(t) t$parent %||% NA_integer_,
                       created = function(t) t$created_at),
           "Tasks")
}

task_id_of <- function(task) {
  if (is.null(task)) {
    if (is.null(.state$last_task)) vantage_abort("no task given, and none was created in this session")
    return(.state$last_task)
  }
  as_id(task, "a task id")
}

task_status <- function(task = NULL, conn = vantage_connection()) {
  new_task(api_get(conn, sprintf("tasks/%d/", task_id_of(task))), conn)
}

# Poll until the task is completed, failed or killed (Debian has no R websocket package).
# The interval grows from 0.5 s to `interval` s; while the server does not answer (a
# restart, a proxy's 502/503/504) the wait goes on until `timeout`.
task_wait <- function(task = NULL, timeout = 600, interval = 5, quiet = FALSE, conn = vantage_connection()) {
  id <- task_id_of(task)
  deadline <- Sys.time() + timeout
  delay <- 0.5
  known <- list()
  status <- NULL
  away <- FALSE
  repeat {
    current <- tryCatch(api_get(conn, sprintf("tasks/%d/", id)), vantage_error = function(e) {
      if (is.na(e$status) || e$status %in% TRANSIENT_STATUSES) {
        if (!away && !quiet) message(sprintf("task %d: the server does not answer (%s); still waiting", id, conditionMessage(e)))
        away <<- TRUE
        return(NULL)
      }
      stop(e)
    })
    if (!is.null(current)) {
      if (away && !quiet) message(sprintf("task %d: the server answers again", id))
      away <- FALSE
      if (!quiet) {
        for (run in current$runs) {
          key <- as.character(run$id)
          if (!identical(known[[key]], run$status)) {
            known[[key]] <- run$status
            message(sprintf("task %d: run %d at %s %s", id, run$id, org_name(conn, run$organization), run$status))
          }
        }
      }
      if (!identical(status, current$status) && !quiet) message(sprintf("task %d: %s", id, current$status))
      status <- current$status
      if (status %in% FINAL_TASK_STATUSES) return(invisible(new_task(current, conn)))
    }
    left <- as.numeric(difftime(deadline, Sys.time(), units = "secs"))
    if (left <= 0) {
      vantage_abort(sprintf("task %d did not finish within %s s (still %s)", id, format(timeout),
                            status %||% "unknown: the server did not answer"))
    }
    Sys.sleep(min(delay, left))
    delay <- min(delay * 1.5, interval)
  }
}

task_kill <- function(task = NULL, conn = vantage_connection()) {
  id <- task_id_of(task)
  send(conn, "POST", sprintf("tasks/%d/kill/", id))
  task_status(id, conn = conn)
}

# ------------------------------------------------------------------ results

# A result's SHA-256 against the one the server recorded (when it sent one).
check_arrived <- function(run_id, data, expected) {
  if (!is.null(expected) && !identical(tolower(expected), paste(as.character(openssl::sha256(data)), collapse = ""))) {
    vantage_abort(sprintf("the result of run %d arrived damaged (SHA-256 mismatch)", run_id))
  }
  data
}

download_result <- function(conn, run_id) {
  resp <- send(conn, "GET", sprintf("runs/%d/result/", run_id), raw = TRUE)
  check_arrived(run_id, resp$body, httr2::resp_header(resp, "X-Content-SHA256"))
}

# A result that came inline with the run list, checked against the SHA-256 the server recorded.
inline_result <- function(run) {
  # [[ ]], not $: `run$result` would match `result_size` when the list has no `result`.
  data <- tryCatch(openssl::base64_decode(run[["result"]]),
                   error = function(e) vantage_abort(sprintf("the result of run %d arrived damaged (not base64)", run$id)))
  check_arrived(run$id, data, run[["result_sha256"]])
}

# The decoded results of the task's completed runs, named by organisation. Small results
# come inline with the run list (one request for the task); a larger one is downloaded.
results <- function(task = NULL, conn = vantage_connection()) {
  id <- task_id_of(task)
  detail <- api_get(conn, sprintf("tasks/%d/", id))
  refuse_encrypted(conn, detail$collaboration)
  runs <- api_list(conn, "runs/", list(task = id, with_result = "true"))
  done <- Filter(function(r) identical(r$status, "completed") && !is.null(r$result_size), runs)
  out <- lapply(done, function(run) {
    data <- if (is.null(run[["result"]])) download_result(conn, run$id) else inline_result(run)
    text <- rawToChar(data)
    tryCatch(jsonlite::fromJSON(text, simplifyVector = FALSE),
             error = function(e) vantage_abort(sprintf("the result of run %d is not JSON: %s", run$id, conditionMessage(e))))
  })
  names(out) <- vapply(done, function(r) org_name(conn, r$organization), "")
  structure(out, class = "vantage_results", task = id)
}

print.vantage_results <- function(x, ...) {
  cat(sprintf("Results of task %s from %d organisation(s)\n", attr(x, "task"), length(x)))
  for (name in names(x)) {
    r <- x[[name]]
    what <- if (is.list(r) && !is.null(r$type)) paste0(r$type, if (!is.null(r$model)) paste0(" (", r$model, ")") else "",
                                                       if (!is.null(r$n)) paste0(", n = ", r$n) else "")
            else class(r)[1]
    cat(sprintf("  $`%s`: %s\n", name, what))
  }
  invisible(x)
}

run_log <- function(run, conn = vantage_connection()) {
  detail <- api_get(conn, sprintf("runs/%d/", as_id(run, "a run id")))
  structure(detail$log %||% "", class = "vantage_run_log", run = detail$id, status = detail$status,
            truncated = isTRUE(detail$log_truncated))
}

print.vantage_run_log <- function(x, ...) {
  cat(sprintf("Log of run %s (%s)%s\n", attr(x, "run"), attr(x, "status"),
              if (isTRUE(attr(x, "truncated"))) ", truncated" else ""))
  cat(unclass(x), if (nzchar(x)) "\n")
  invisible(x)
}

last_lines <- function(log, n = 3) {
  lines <- strsplit(log %||% "", "\n", fixed = TRUE)[[1]]
  lines <- lines[nzchar(trimws(lines))]
  paste(utils::tail(lines, n), collapse = " | ")
}

# Per-organisation failures of a task and of the subtasks its central method created, in
# the manner of DataSHIELD's datashield.errors(): named by organisation, one message each.
errors <- function(task = NULL, conn = vantage_connection()) {
  id <- task_id_of(task)
  ids <- id
  frontier <- id
  while (length(frontier)) {
    children <- unlist(lapply(frontier, function(t) vapply(api_list(conn, "tasks/", list(parent = t)), function(x) as.integer(x$id), 1L)))
    children <- setdiff(children, ids)
    ids <- c(ids, children)
    frontier <- children
  }
  messages <- list()
  for (t in ids) {
    for (run in api_list(conn, "runs/", list(task = t))) {
      if (!run$status %in% FAILED_RUN_STATUSES) next
      detail <- api_get(conn, sprintf("runs/%d/", run$id))
      kind <- if (is.null(run$error_kind) || !nzchar(run$error_kind)) "" else paste0(", ", run$error_kind)
      code <- if (is.null(run$exit_code)) "" else paste0(", exit code ", run$exit_code)
      log <- last_lines(detail$log)
      text <- sprintf("task %d, run %d: %s%s%s: %s", t, run$id, run$status, kind, code,
                      if (nzchar(log)) log else "no log")
      who <- org_name(conn, run$organization)
      messages[[who]] <- c(messages[[who]], text)
    }
  }
  structure(messages, class = "vantage_errors", task = id)
}

print.vantage_errors <- function(x, ...) {
  if (!length(x)) {
    cat(sprintf("No errors in task %s or its subtasks\n", attr(x, "task")))
    return(invisible(x))
  }
  print(unclass(structure(x, task = NULL)))
  invisible(x)
}
