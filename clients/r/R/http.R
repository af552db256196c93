# The HTTP layer: one connection object (an environment, so a refreshed token is seen by
# every caller holding it), conditions that carry the server's message, token refresh and
# pagination. Mirrors client/vantage_client/client.py.

.state <- new.env(parent = emptyenv())

PAGE_SIZE <- 500L
# A proxy in front of a restarting server answers these; a wait keeps trying through them.
TRANSIENT_STATUSES <- c(502L, 503L, 504L)
# Refresh an access token this close (seconds) to its expiry before using it.
REFRESH_MARGIN <- 30

# Every failure is a condition of class `vantage_error` (also `error`), with `status`
# (the HTTP status, NA when no answer came), `fields` (the server's field messages) and
# `code`, so callers can tryCatch(vantage_error = ...) and read them.
vantage_abort <- function(message, status = NA_integer_, fields = list(), code = NULL, call = NULL) {
  cond <- structure(
    class = c(if (!is.na(status)) paste0("vantage_http_", status), "vantage_error", "error", "condition"),
    list(message = message, call = call, status = as.integer(status), fields = fields, code = code)
  )
  stop(cond)
}

flatten_message <- function(value) {
  if (is.list(value)) {
    if (!is.null(names(value)) && all(nzchar(names(value)))) {
      return(paste(vapply(names(value), function(k) paste0(k, ": ", flatten_message(value[[k]])), ""),
                   collapse = "; "))
    }
    return(paste(vapply(value, flatten_message, ""), collapse = " "))
  }
  paste(as.character(value), collapse = " ")
}

# The one-line message of an error answer: "HTTP 400: organizations: ...", as the Python
# client words it.
error_from_response <- function(resp) {
  status <- httr2::resp_status(resp)
  body <- tryCatch(jsonlite::fromJSON(body_text(resp), simplifyVector = FALSE), error = function(e) NULL)
  fields <- list()
  code <- NULL
  if (is.list(body) && !is.null(names(body))) {
    if (is.character(body$code)) code <- body$code
    fields <- body[names(body) != "code"]
    parts <- vapply(names(fields), function(k) {
      if (k %in% c("detail", "non_field_errors")) flatten_message(fields[[k]])
      else paste0(k, ": ", flatten_message(fields[[k]]))
    }, "")
    message <- paste(parts, collapse = "; ")
  } else {
    text <- body_text(resp)
    lines <- strsplit(trimws(text), "\n", fixed = TRUE)[[1]]
    message <- if (length(lines)) substr(lines[[1]], 1, 300) else ""
  }
  if (!nzchar(message)) message <- httr2::resp_status_desc(resp) %||% "no details"
  vantage_abort(paste0("HTTP ", status, ": ", message), status = status, fields = fields, code = code)
}

# httr2 0.2.2 refuses to read an empty body; an empty answer is "" here.
body_text <- function(resp) {
  raw <- resp$body
  if (!length(raw)) return("")
  rawToChar(raw)
}

`%||%` <- function(a, b) if (is.null(a) || (length(a) == 1 && is.na(a))) b else a

# The payload of a JWT, unverified: the client reads only its expiry and user id.
token_claims <- function(token) {
  part <- strsplit(token %||% "", ".", fixed = TRUE)[[1]]
  if (length(part) < 2) return(list())
  payload <- chartr("-_", "+/", part[[2]])
  payload <- paste0(payload, strrep("=", (4 - nchar(payload) %% 4) %% 4))
  tryCatch(jsonlite::fromJSON(rawToChar(jsonlite::base64_dec(payload)), simplifyVector = FALSE),
           error = function(e) list())
}

new_connection <- function(url, timeout = 30) {
  conn <- new.env(parent = emptyenv())
  conn$url <- sub("/+$", "", url)
  conn$timeout <- timeout
  conn$access <- NULL
  conn$refresh <- NULL
  conn$user <- NULL
  conn$collaboration <- NULL
  conn$database <- "default"
  conn$encrypted <- list()
  class(conn) <- "vantage_connection"
  conn
}

# The connection functions use when none is given: the last `vantage_login()`.
vantage_connection <- function() {
  conn <- .state$conn
  if (is.null(conn) || is.null(conn$access)) {
    vantage_abort("not logged in: call vantage_login(url, username, password) first")
  }
  conn
}

print.vantage_connection <- function(x, ...) {
  who <- if (is.null(x$user)) "not logged in" else sprintf("logged in as %s (organisation %s)",
                                                          x$user$username, x$user$organization)
  cat(sprintf("<vantage connection to %s: %s>\n", x$url, who))
  if (!is.null(x$collaboration)) {
    cat(sprintf("  collaboration %d (%s), data \"%s\"\n", x$collaboration$id, x$collaboration$name, x$database))
  }
  invisible(x)
}

access_token <- function(conn) {
  if (is.null(conn$access)) vantage_abort("not logged in: call vantage_login(url, username, password) first")
  expires <- token_claims(conn$access)$exp
  if (!is.null(conn$refresh) && is.numeric(expires) &&
      expires - as.numeric(Sys.time()) < REFRESH_MARGIN) {
    refresh_access(conn)
  }
  conn$access
}

refresh_access <- function(conn) {
  if (is.null(conn$refresh)) vantage_abort("the session expired: log in again", status = 401L)
  body <- tryCatch(
    send(conn, "POST", "token/refresh/", body = list(refresh = conn$refresh), auth = FALSE),
    vantage_error = function(e) {
      if (identical(e$status, 401L)) vantage_abort("the session expired: log in again", status = 401L)
      stop(e)
    }
  )
  conn$access <- body$access
  if (!is.null(body$refresh)) conn$refresh <- body$refresh  # present when the server rotates them
  invisible(conn)
}

api_url <- function(conn, path) {
  if (grepl("^https?://", path)) path else paste0(conn$url, "/api/", sub("^/+", "", path))
}

perform <- function(conn, method, url, query, body, auth) {
  req <- httr2::request(url)
  req <- httr2::req_method(req, method)
  req <- httr2::req_headers(req, Accept = "application/json")
  req <- httr2::req_timeout(req, conn$timeout)
  req <- httr2::req_error(req, is_error = function(resp) FALSE)
  if (length(query)) req <- do.call(httr2::req_url_query, c(list(req), query))
  if (!is.null(body)) req <- httr2::req_body_json(req, body, auto_unbox = TRUE, null = "null", digits = NA)
  if (auth) req <- httr2::req_auth_bearer_token(req, access_token(conn))
  tryCatch(httr2::req_perform(req), error = function(e) {
    vantage_abort(sprintf("cannot reach %s: %s", conn$url, conditionMessage(e)))
  })
}

# One request; an expired access token is refreshed once and the request repeated.
# Returns the parsed JSON body (NULL when empty), or the response itself with raw = TRUE.
send <- function(conn, method, path, query = list(), body = NULL, auth = TRUE, raw = FALSE) {
  url <- api_url(conn, path)
  resp <- perform(conn, method, url, query, body, auth)
  if (auth && httr2::resp_status(resp) == 401L && !is.null(conn$refresh)) {
    refresh_access(conn)
    resp <- perform(conn, method, url, query, body, auth)
  }
  if (httr2::resp_status(resp) >= 400L) error_from_response(resp)
  if (raw) return(resp)
  text <- body_text(resp)
  if (!nzchar(text)) return(NULL)
  jsonlite::fromJSON(text, simplifyVector = FALSE)
}

api_get <- function(conn, path, query = list()) send(conn, "GET", path, query = query)

# Every object of a list endpoint, following `next` to the last page.
api_list <- function(conn, path, query = list()) {
  query <- c(list(page_size = PAGE_SIZE), Filter(Negate(is.null), query))
  page <- send(conn, "GET", path, query = query)
  items <- page$results
  seen <- character()
  while (!is.null(page$`next`)) {
    if (page$`next` %in% seen) {
      vantage_abort(sprintf("the server's pagination of %s loops at %s", path, page$`next`))
    }
    seen <- c(seen, page$`next`)
    page <- send(conn, "GET", page$`next`)
    items <- c(items, page$results)
  }
  items
}

as_id <- function(x, what = "an id") {
  if (is.list(x)) x <- x$id
  if (length(x) != 1 || !is.numeric(x) || is.na(x) || x != round(x)) {
    vantage_abort(sprintf("expected %s (a number) or an object with an id", what))
  }
  as.integer(x)
}
