//! The HTML of the example's pages: small, plain, every user-supplied text escaped.

use std::fmt::Write;

/// `text` safe inside HTML text and double-quoted attributes.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn page(title: &str, body: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title}</title></head>\n\
         <body style=\"font-family: sans-serif; margin: 2em\">\n<h1>{title}</h1>\n{body}</body></html>\n"
    )
}

/// The login form; `problem` is shown above it (a failed attempt).
pub fn login(problem: Option<&str>) -> String {
    let mut body = String::new();
    if let Some(problem) = problem {
        let _ = writeln!(
            body,
            "<p id=\"problem\" style=\"color: #b00\">{}</p>",
            escape(problem)
        );
    }
    body.push_str(
        "<form method=\"post\" action=\"/login\">\n\
         <p><label>user <input name=\"user\" autocomplete=\"username\"></label></p>\n\
         <p><label>password <input name=\"password\" type=\"password\" autocomplete=\"current-password\"></label></p>\n\
         <p><button type=\"submit\">Log in</button></p>\n</form>\n\
         <p>Try ada / lovelace or grace / hopper.</p>\n",
    );
    page("Log in", &body)
}

/// The page behind the login: the service's greeting, the nickname form
/// (carrying the session version it was rendered with), and log out.
pub fn hello(greeting: &str, visits: u64, nickname: &str, version: u64) -> String {
    let body = format!(
        "<p id=\"greeting\">{greeting} (visit {visits})</p>\n\
         <form method=\"post\" action=\"/nickname\">\n\
         <input type=\"hidden\" name=\"version\" value=\"{version}\">\n\
         <p><label>nickname <input name=\"nickname\" value=\"{nickname}\"></label>\n\
         <button type=\"submit\">Save</button></p>\n</form>\n\
         <form method=\"post\" action=\"/logout\"><button type=\"submit\" id=\"logout\">Log out</button></form>\n",
        greeting = escape(greeting),
        nickname = escape(nickname),
    );
    page("Hello", &body)
}
