# A fake Vantage API on webfakes: real HTTP on loopback, answers scripted per test.
# (The live tests in tests/live/ use the real server; these cover the edge cases a real
# server produces only by accident: expiring tokens, restarts, long pagination.)

`%||%` <- function(a, b) if (is.null(a)) b else a

jwt <- function(claims) {
  enc <- function(x) gsub("=+$", "", chartr("+/", "-_", jsonlite::base64_enc(charToRaw(x))))
  paste(enc('{"alg":"HS256","typ":"JWT"}'), enc(jsonlite::toJSON(claims, auto_unbox = TRUE)), "signature", sep = ".")
}

fresh_token <- function(name = "first") jwt(list(user_id = 1, exp = as.numeric(Sys.time()) + 3600, jti = name))

# webfakes' ":id" patterns do not match before a trailing slash: a regular expression does.
route <- function(pattern) webfakes::new_regexp(paste0("^", sub(":id", "(?<id>[0-9]+)", pattern, fixed = TRUE), "$"))

fake_api <- function() {
  # Handlers run in the app's own process: what they use is defined here, in their closure.
  jwt <- jwt
  fresh_token <- function(name = "first") jwt(list(user_id = 1, exp = as.numeric(Sys.time()) + 3600, jti = name))
  app <- webfakes::new_app()
  app$use(webfakes::mw_json())
  app$locals$calls <- list()
  count <- function(app, what) {
    app$locals$calls[[what]] <- (app$locals$calls[[what]] %or% 0) + 1
  }
  `%or%` <- function(a, b) if (is.null(a)) b else a

  bearer <- function(req) sub("^Bearer ", "", req$get_header("Authorization") %or% "")

  app$post("/api/token/", function(req, res) {
    body <- req$json
    count(req$app, "login")
    req$app$locals$last_login <- body
    if (identical(body$username, "carol") && is.null(body$otp)) {
      return(res$set_status(400L)$send_json(list(otp = list("A one-time password is required.")), auto_unbox = TRUE))
    }
    if (!identical(body$password, "secret")) {
      return(res$set_status(401L)$send_json(list(detail = "No active account found with the given credentials"),
                                            auto_unbox = TRUE))
    }
    # "stale" hands out an access token the server will refuse, to force a refresh.
    access <- if (identical(body$username, "stale")) jwt(list(user_id = 1, exp = as.numeric(Sys.time()) + 3600, jti = "stale"))
              else fresh_token()
    res$send_json(list(access = access, refresh = if (identical(body$username, "norefresh")) "revoked" else "refresh-1"),
                  auto_unbox = TRUE)
  })

  app$post("/api/token/refresh/", function(req, res) {
    count(req$app, "refresh")
    if (!identical(req$json$refresh, "refresh-1")) {
      return(res$set_status(401L)$send_json(list(detail = "Token is invalid or expired", code = "token_not_valid"),
                                            auto_unbox = TRUE))
    }
    res$send_json(list(access = fresh_token("refreshed")), auto_unbox = TRUE)
  })

  # Every other endpoint refuses the "stale" token as an expired one, as the server does.
  authorised <- function(req, res) {
    token <- bearer(req)
    part <- chartr("-_", "+/", strsplit(token, ".", fixed = TRUE)[[1]][2])
    part <- paste0(part, strrep("=", (4 - nchar(part) %% 4) %% 4))
    claims <- tryCatch(jsonlite::fromJSON(rawToChar(jsonlite::base64_dec(part))), error = function(e) list())
    if (!length(claims) || identical(claims$jti, "stale")) {
      res$set_status(401L)$send_json(list(detail = "Given token not valid for any token type", code = "token_not_valid"),
                                     auto_unbox = TRUE)
      return(FALSE)
    }
    TRUE
  }

  app$get(route("/api/users/:id/"), function(req, res) {
    if (!authorised(req, res)) return()
    res$send_json(list(id = 1, username = "alice", organization = 7), auto_unbox = TRUE)
  })

  # Seven organisations over pages of three, `next` as an absolute URL like DRF's.
  app$get("/api/organizations/", function(req, res) {
    if (!authorised(req, res)) return()
    count(req$app, "organizations")
    if (is.null(req$query[["page"]])) req$app$locals$page_size <- req$query[["page_size"]]
    page <- as.integer(req$query[["page"]] %or% "1")
    ids <- seq((page - 1) * 3 + 1, min(page * 3, 7))
    more <- page * 3 < 7
    res$send_json(list(
      count = 7,
      `next` = if (more) sprintf("http://%s/api/organizations/?page=%d&page_size=3", req$get_header("Host"), page + 1) else NULL,
      previous = NULL,
      results = lapply(ids, function(i) list(id = i, name = sprintf("Hospital %d", i), country = "NL", public_key = ""))
    ), auto_unbox = TRUE, null = "null")
  })

  app$get("/api/studies/", function(req, res) {
    if (!authorised(req, res)) return()
    res$send_json(list(count = 2, `next` = sprintf("http://%s/api/studies/", req$get_header("Host")), results = list(list(id = 1))),
                  auto_unbox = TRUE)
  })

  app$get(route("/api/tasks/:id/"), function(req, res) {
    if (!authorised(req, res)) return()
    if (identical(req$params$id, "2")) {
      return(res$send_json(list(id = 2, status = "active", collaboration = 3, runs = list()), auto_unbox = TRUE))
    }
    res$set_status(404L)$send_json(list(detail = "Not found."), auto_unbox = TRUE)
  })

  app$post(route("/api/tasks/:id/kill/"), function(req, res) {
    if (!authorised(req, res)) return()
    res$set_status(403L)$send_json(list(detail = "You do not have permission to perform this action."), auto_unbox = TRUE)
  })

  app$get(route("/api/collaborations/:id/"), function(req, res) {
    if (!authorised(req, res)) return()
    res$send_json(list(id = as.integer(req$params$id), name = "study", organizations = list(7, 8),
                       encrypted = identical(req$params$id, "9"), status = "active"), auto_unbox = TRUE)
  })

  app$post("/api/tasks/", function(req, res) {
    if (!authorised(req, res)) return()
    req$app$locals$task_body <- req$json
    res$set_status(400L)$send_json(list(organizations = list("Organisations [8] are not members of collaboration 3.")),
                                   auto_unbox = TRUE)
  })

  app$get("/calls", function(req, res) res$send_json(req$app$locals$calls, auto_unbox = TRUE))
  app$get("/last", function(req, res) {
    res$send_json(list(login = req$app$locals$last_login, page_size = req$app$locals$page_size,
                       task = req$app$locals$task_body), auto_unbox = TRUE, null = "null")
  })
  app
}

calls <- function(web) jsonlite::fromJSON(httr2::resp_body_string(httr2::req_perform(httr2::request(web$url("/calls")))))
last <- function(web) jsonlite::fromJSON(httr2::resp_body_string(httr2::req_perform(httr2::request(web$url("/last")))),
                                         simplifyVector = FALSE)
