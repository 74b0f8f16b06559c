//! Slot values: finding them in a message and checking them against a rule.
//!
//! A rule is one of the named kinds below (`integer:1..10`, `one_of:a,b`,
//! `regex:...`), or else a CEL expression over `value`, the answer as text.

use std::sync::LazyLock;

use regex::{Regex, RegexBuilder};
use serde_json::{Value, json};

use crate::context::Conversation;
use crate::expr::{Expr, Scope};

/// How a slot's value is found and checked.
#[derive(Debug)]
pub enum Rule {
    /// Any non-empty text (no rule written).
    Text,
    Integer {
        min: Option<i64>,
        max: Option<i64>,
    },
    Number {
        min: Option<f64>,
        max: Option<f64>,
    },
    Email,
    Phone,
    /// yes/no answers.
    Boolean,
    /// One of fixed options, matched as whole words, case-insensitively.
    OneOf(Vec<String>),
    /// The first capture group, or the whole match.
    Regex(Regex),
    /// A CEL expression over `value` that must be true.
    Cel(Expr),
}

static INTEGER: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"-?\b\d+\b").unwrap());
static NUMBER: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"-?\d+(?:[.,]\d+)?").unwrap());
static EMAIL: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"[^\s@<>(),;:]+@[^\s@<>(),;:]+\.[A-Za-z]{2,}").unwrap());
static PHONE: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"\+?\d[\d\s().-]{5,}\d").unwrap());

const NUMBER_WORDS: [&str; 21] = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
    "twenty",
];
const YES: [&str; 10] = [
    "yes", "y", "yeah", "yep", "sure", "ok", "okay", "true", "correct", "right",
];
const NO: [&str; 6] = ["no", "n", "nope", "false", "wrong", "incorrect"];

impl Rule {
    /// Reads a rule as written in `validation_rules`.
    pub fn parse(source: &str) -> Result<Rule, String> {
        let source = source.trim();
        let (kind, arg) = match source.split_once(':') {
            Some((kind, arg)) => (kind.trim(), Some(arg)),
            None => (source, None),
        };
        let rule = match (kind, arg) {
            ("text", None) => Rule::Text,
            ("integer", arg) => {
                let (min, max) = parse_range(arg, |s| s.parse::<i64>().ok())?;
                Rule::Integer { min, max }
            }
            ("number", arg) => {
                let (min, max) = parse_range(arg, |s| s.parse::<f64>().ok())?;
                Rule::Number { min, max }
            }
            ("email", None) => Rule::Email,
            ("phone", None) => Rule::Phone,
            ("boolean", None) => Rule::Boolean,
            ("one_of", Some(options)) => {
                let options: Vec<String> = options
                    .split(',')
                    .map(|o| o.trim().to_owned())
                    .filter(|o| !o.is_empty())
                    .collect();
                if options.is_empty() {
                    return Err("one_of needs at least one option, e.g. one_of:small,large".into());
                }
                Rule::OneOf(options)
            }
            ("regex", Some(pattern)) => Rule::Regex(
                RegexBuilder::new(pattern)
                    .case_insensitive(true)
                    .build()
                    .map_err(|e| format!("invalid regular expression: {e}"))?,
            ),
            _ => {
                let expr = Expr::compile(source).map_err(|e| {
                    format!(
                        "not a known rule (text, integer[:min..max], number[:min..max], email, phone, \
                         boolean, one_of:a,b, regex:<pattern>) nor a valid CEL expression: {e}"
                    )
                })?;
                if !expr.source().contains("value") {
                    return Err(format!(
                        "\"{source}\" is not a known rule, and as a CEL expression it never reads `value`"
                    ));
                }
                Rule::Cel(expr)
            }
        };
        Ok(rule)
    }

    /// Finds this rule's value in the answer to the slot's own prompt. The
    /// error says what was expected, for the retry prompt and the logs.
    pub fn extract(&self, text: &str, conversation: &Conversation) -> Result<Value, String> {
        let text = text.trim();
        if text.is_empty() {
            return Err("the answer is empty".into());
        }
        match self {
            Rule::Text => Ok(json!(text)),
            Rule::Cel(expr) => {
                let value = json!(text);
                match expr.eval_bool(&Scope::new(conversation, None).with("value", &value)) {
                    Ok(true) => Ok(value),
                    Ok(false) => Err(format!("\"{text}\" does not satisfy {}", expr.source())),
                    Err(e) => Err(format!("rule {} failed: {e}", expr.source())),
                }
            }
            _ => self
                .find(text)
                .unwrap_or_else(|| Err(format!("expected {}", self.describe()))),
        }
    }

    /// Finds this rule's value anywhere in a message that answered some other
    /// prompt. Only rules that cannot mistake unrelated words for a value
    /// take part: options, patterns and e-mail addresses.
    pub fn find_unprompted(&self, text: &str) -> Option<Value> {
        match self {
            Rule::OneOf(_) | Rule::Regex(_) | Rule::Email => self.find(text)?.ok(),
            _ => None,
        }
    }

    /// Checks a value the caller supplied (an entity) and normalises it.
    pub fn accept(&self, value: &Value, conversation: &Conversation) -> Result<Value, String> {
        match (self, value) {
            (Rule::Integer { .. }, Value::Number(n)) if n.is_i64() => self
                .find(&n.to_string())
                .unwrap_or(Err("out of range".into())),
            (Rule::Number { .. }, Value::Number(n)) => self
                .find(&n.to_string())
                .unwrap_or(Err("out of range".into())),
            (Rule::Boolean, Value::Bool(_)) => Ok(value.clone()),
            (_, Value::String(s)) => self.extract(s, conversation),
            (_, other) => self.extract(&other.to_string(), conversation),
        }
    }

    /// `None` when nothing of the kind is in `text`; `Some(Err)` when
    /// something is, but it breaks the rule (e.g. out of range).
    fn find(&self, text: &str) -> Option<Result<Value, String>> {
        match self {
            Rule::Text | Rule::Cel(_) => None,
            Rule::Integer { min, max } => {
                let n = INTEGER
                    .find(text)
                    .and_then(|m| m.as_str().parse::<i64>().ok())
                    .or_else(|| number_word(text))?;
                Some(check_range(n, *min, *max).map(|n| json!(n)))
            }
            Rule::Number { min, max } => {
                let n = NUMBER
                    .find(text)?
                    .as_str()
                    .replace(',', ".")
                    .parse::<f64>()
                    .ok()?;
                Some(check_range(n, *min, *max).map(|n| json!(n)))
            }
            Rule::Email => Some(Ok(json!(EMAIL.find(text)?.as_str().to_lowercase()))),
            Rule::Phone => {
                let found = PHONE.find(text)?.as_str();
                let digits: String = found.chars().filter(char::is_ascii_digit).collect();
                if !(7..=15).contains(&digits.len()) {
                    return Some(Err("a phone number has 7 to 15 digits".into()));
                }
                let plus = if found.starts_with('+') { "+" } else { "" };
                Some(Ok(json!(format!("{plus}{digits}"))))
            }
            Rule::Boolean => words(text).find_map(|w| {
                if YES.contains(&w.as_str()) {
                    Some(Ok(json!(true)))
                } else if NO.contains(&w.as_str()) {
                    Some(Ok(json!(false)))
                } else {
                    None
                }
            }),
            Rule::OneOf(options) => {
                let lower = text.to_lowercase();
                options
                    .iter()
                    .filter_map(|option| {
                        find_word(&lower, &option.to_lowercase()).map(|at| (at, option))
                    })
                    .min_by_key(|(at, _)| *at)
                    .map(|(_, option)| Ok(json!(option)))
            }
            Rule::Regex(regex) => {
                let captures = regex.captures(text)?;
                let found = captures.get(1).or_else(|| captures.get(0))?;
                Some(Ok(json!(found.as_str())))
            }
        }
    }

    /// What the rule expects, in words.
    pub fn describe(&self) -> String {
        fn bounds<T: std::fmt::Display>(what: &str, min: &Option<T>, max: &Option<T>) -> String {
            match (min, max) {
                (Some(min), Some(max)) => format!("{what} from {min} to {max}"),
                (Some(min), None) => format!("{what} of at least {min}"),
                (None, Some(max)) => format!("{what} of at most {max}"),
                (None, None) => what.to_owned(),
            }
        }
        match self {
            Rule::Text => "an answer".into(),
            Rule::Integer { min, max } => bounds("a whole number", min, max),
            Rule::Number { min, max } => bounds("a number", min, max),
            Rule::Email => "an e-mail address".into(),
            Rule::Phone => "a phone number".into(),
            Rule::Boolean => "yes or no".into(),
            Rule::OneOf(options) => format!("one of {}", options.join(", ")),
            Rule::Regex(regex) => format!("text matching {}", regex.as_str()),
            Rule::Cel(expr) => format!("a value for which {} holds", expr.source()),
        }
    }
}

fn parse_range<T: Copy + PartialOrd>(
    arg: Option<&str>,
    parse: impl Fn(&str) -> Option<T>,
) -> Result<(Option<T>, Option<T>), String> {
    let Some(arg) = arg else {
        return Ok((None, None));
    };
    let bad = || format!("invalid range \"{arg}\"; write min..max, min.. or ..max");
    let (min, max) = arg.split_once("..").ok_or_else(bad)?;
    let bound = |s: &str| -> Result<Option<T>, String> {
        let s = s.trim();
        if s.is_empty() {
            Ok(None)
        } else {
            parse(s).map(Some).ok_or_else(bad)
        }
    };
    let (min, max) = (bound(min)?, bound(max)?);
    if let (Some(lo), Some(hi)) = (min, max)
        && lo > hi
    {
        return Err(format!(
            "invalid range \"{arg}\": the minimum is above the maximum"
        ));
    }
    Ok((min, max))
}

fn check_range<T: Copy + PartialOrd + std::fmt::Display>(
    n: T,
    min: Option<T>,
    max: Option<T>,
) -> Result<T, String> {
    match (min, max) {
        (Some(min), _) if n < min => Err(format!("{n} is below the minimum of {min}")),
        (_, Some(max)) if n > max => Err(format!("{n} is above the maximum of {max}")),
        _ => Ok(n),
    }
}

fn words(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
}

fn number_word(text: &str) -> Option<i64> {
    words(text).find_map(|w| NUMBER_WORDS.iter().position(|n| *n == w).map(|n| n as i64))
}

/// Byte offset of `needle` in `haystack` as a whole word (or phrase).
fn find_word(haystack: &str, needle: &str) -> Option<usize> {
    let is_word = |c: Option<char>| c.is_some_and(char::is_alphanumeric);
    haystack
        .match_indices(needle)
        .map(|(at, _)| at)
        .find(|&at| {
            let before = haystack[..at].chars().next_back();
            let after = haystack[at + needle.len()..].chars().next();
            !is_word(before) && !is_word(after)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conversation() -> Conversation {
        crate::context::tests::blank_conversation()
    }

    #[test]
    fn integers_are_found_in_sentences_and_range_checked() {
        let c = conversation();
        let rule = Rule::parse("integer:1..10").unwrap();
        assert_eq!(rule.extract("I'd like 3 please", &c).unwrap(), json!(3));
        assert_eq!(rule.extract("two", &c).unwrap(), json!(2));
        let err = rule.extract("50", &c).unwrap_err();
        assert!(err.contains("above the maximum of 10"), "{err}");
        assert!(
            rule.extract("lots", &c)
                .unwrap_err()
                .contains("from 1 to 10")
        );
    }

    #[test]
    fn options_match_whole_words_and_return_the_canonical_spelling() {
        let c = conversation();
        let rule = Rule::parse("one_of: Small, Medium, Large").unwrap();
        assert_eq!(rule.extract("a LARGE one", &c).unwrap(), json!("Large"));
        assert!(rule.extract("smallish", &c).is_err());
        assert_eq!(
            rule.find_unprompted("two large pizzas"),
            Some(json!("Large"))
        );
    }

    #[test]
    fn cel_rules_read_value() {
        let c = conversation();
        let rule = Rule::parse("size(value) == 5 && value.matches('^[0-9]+$')").unwrap();
        assert_eq!(rule.extract("12345", &c).unwrap(), json!("12345"));
        assert!(rule.extract("1234", &c).is_err());
    }

    #[test]
    fn emails_phones_and_booleans_are_normalised() {
        let c = conversation();
        let email = Rule::parse("email").unwrap();
        assert_eq!(
            email.extract("it's Ann@Example.com", &c).unwrap(),
            json!("ann@example.com")
        );
        let phone = Rule::parse("phone").unwrap();
        assert_eq!(
            phone.extract("+1 (555) 010-9999", &c).unwrap(),
            json!("+15550109999")
        );
        let yes_no = Rule::parse("boolean").unwrap();
        assert_eq!(yes_no.extract("Yes, please", &c).unwrap(), json!(true));
        assert_eq!(yes_no.extract("nope", &c).unwrap(), json!(false));
    }

    #[test]
    fn bad_rules_are_rejected_with_a_reason() {
        assert!(
            Rule::parse("integer:10..1")
                .unwrap_err()
                .contains("minimum is above")
        );
        assert!(
            Rule::parse("regex:(")
                .unwrap_err()
                .contains("invalid regular expression")
        );
        assert!(
            Rule::parse("one_of:")
                .unwrap_err()
                .contains("at least one option")
        );
        assert!(
            Rule::parse("intger")
                .unwrap_err()
                .contains("never reads `value`")
        );
    }
}
