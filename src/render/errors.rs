//! [`RenderError`], and minijinja's errors turned into one: the template,
//! the line, the expression and the fix.

use minijinja::ErrorKind;

use super::hints;

/// A template that could not be read, compiled or rendered.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{template}{}: {message}", line.map(|l| format!(" line {l}")).unwrap_or_default())]
pub struct RenderError {
    /// The template's name (its file name, or its path when two share a name).
    pub template: String,
    /// The template line the error is on, when minijinja knows it.
    pub line: Option<usize>,
    /// What went wrong, with the line's text and the fix.
    pub message: String,
}

/// [`convert`], saying what running out of fuel means.
pub(super) fn convert_with_fuel(
    name: &str,
    e: &minijinja::Error,
    fuel: u64,
    known: &hints::Known<'_>,
) -> RenderError {
    let mut error = convert(name, e, Some(known));
    if e.kind() == ErrorKind::OutOfFuel {
        error.message = format!(
            "the render used up its instruction budget (fuel {fuel}): a loop that runs too long, or a size too large to honour (like indent(n) or \"x\" * n); {}",
            error.message
        );
    }
    error
}

/// minijinja's error, reduced to template, line and a message that quotes
/// the offending expression and line so the fix is obvious from a log line;
/// with `known` (a render), a "did you mean" for a misspelt name.
pub(super) fn convert(
    name: &str,
    e: &minijinja::Error,
    known: Option<&hints::Known<'_>>,
) -> RenderError {
    // An error inside an included or imported template (a partial) is
    // wrapped: name the innermost, where the fix is.
    let outer = e;
    let mut e = e;
    while let Some(inner) =
        std::error::Error::source(e).and_then(|s| s.downcast_ref::<minijinja::Error>())
    {
        e = inner;
    }
    let included = (e.name() != outer.name())
        .then(|| {
            let by = outer.name()?;
            Some(match outer.line() {
                Some(l) => format!(" (included by {by} line {l})"),
                None => format!(" (included by {by})"),
            })
        })
        .flatten()
        .unwrap_or_default();
    let mut message = e.kind().to_string();
    if let Some(detail) = e.detail() {
        message.push_str(": ");
        message.push_str(detail);
    }
    let mut line = e.line();
    // A block never closed: minijinja reports the end of the file; the
    // useful line is where the block opened.
    let unclosed = e
        .detail()
        .filter(|d| e.kind() == ErrorKind::SyntaxError && d.contains("unexpected end of input"))
        .and(e.template_source())
        .map(hints::unclosed_blocks)
        .unwrap_or_default();
    if let Some(((opened, tag, end), outer)) = unclosed.split_first() {
        let word = |tag: &str| {
            tag.split_whitespace()
                .next()
                .unwrap_or_default()
                .to_string()
        };
        let others: Vec<String> = outer
            .iter()
            .map(|(l, t, _)| format!("{{% {} %}} on line {l}", word(t)))
            .collect();
        let others = if others.is_empty() {
            String::new()
        } else {
            format!(" (also still open: {})", others.join(", "))
        };
        message = format!(
            "syntax error: the {{% {} %}} on line {opened} is never closed: the file ends before its {{% {end} %}}; add {{% {end} %}} where the block ends{others}",
            word(tag),
        );
        line = Some(*opened);
    }
    if let Some(hint) = known.and_then(|k| hints::did_you_mean(e, k)) {
        message.push_str(&hint);
    }
    let expression = e
        .template_source()
        .zip(e.range())
        .and_then(|(source, range)| source.get(range))
        .map(str::trim)
        .unwrap_or_default();
    if unclosed.is_empty() {
        if let Some((at, better)) = hints::rewrite(
            e.kind(),
            e.detail().unwrap_or_default(),
            e.template_source().unwrap_or_default(),
            line,
            expression,
        ) {
            message = better;
            line = at;
        }
    }
    // A template's own fail("...") says everything itself.
    let own = expression.starts_with("fail(");
    if !own
        && !expression.is_empty()
        && !expression.contains('\n')
        && e.kind() == ErrorKind::InvalidOperation
    {
        message.push_str(&format!(" (the expression: {expression})"));
    }
    if let (false, Some(source), Some(line)) = (own, e.template_source(), line) {
        if let Some(text) = source.lines().nth(line.saturating_sub(1)) {
            message.push_str(&format!(" (the line reads: {})", text.trim()));
        }
    }
    message.push_str(&included);
    RenderError {
        template: e.name().unwrap_or(name).to_string(),
        line,
        message,
    }
}
