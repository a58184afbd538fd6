//! What a tenant policy's text may be before Cedar parses it.
//!
//! Cedar's parser recurses several frames per level of nesting (about 14 KiB of stack per
//! bracket in a test build), and its validator and evaluator recurse once per level of the
//! expression tree. Two hundred nested parentheses overflow a 2 MiB tokio worker stack, and
//! a stack overflow aborts the process: every tenant's gateway. Short of that, Cedar's
//! validator meets its own stack guard and then accepts the policy *without* type-checking
//! it. So the text is measured first, in one pass over its bytes without recursion, and
//! refused above these limits. Every tenant policy goes through here
//! ([`super::PolicyEngine::compile`]), whether it arrives through the API or is loaded from
//! the database.
//!
//! The limits are far above what real policies need (a few brackets deep, a few dozen
//! conditions), and low enough that the deepest text of every shape under them compiles,
//! validates and evaluates on a 2 MiB stack with half a mebibyte to spare
//! (`tests::policies_at_the_limits_compile_validate_and_evaluate_on_a_worker_stack`).

use super::PolicyError;

/// Largest policy text, in bytes.
pub const MAX_POLICY_BYTES: usize = 64 * 1024;
/// Deepest nesting of `()`, `[]` and `{}`.
pub const MAX_POLICY_NESTING: usize = 32;
/// Deepest expression: the most levels any one path into the tree Cedar builds can pass
/// through, counted from the text as brackets plus chained operators (`a && b && c` is 2
/// deep; `a.b == 1 && c` is 3: one `&&`, one `==`, one `.`).
pub const MAX_POLICY_DEPTH: usize = 128;

/// Operators by precedence, loosest first. Each operator of a class adds a level to the
/// tree; an operator of a looser class starts a new operand, in which the tighter classes
/// count from zero again (`a.b == 1 && c.d == 2` chains one `&&`, not two `.` and two `==`).
#[derive(Debug, Clone, Copy)]
enum Class {
    /// `when`, `unless`: a policy's conditions are joined with `&&`.
    Condition,
    /// `if` (with `then` and `else` separating its operands).
    If,
    Or,
    And,
    /// `==`, `!=`, `<`, `<=`, `>`, `>=`, `in`, `has`, `like`, `is`.
    Relation,
    /// `+`, `-` (unary minus counts here too).
    Sum,
    /// `*`, `/`, `%`.
    Product,
    /// `!`.
    Not,
    /// `.attribute`, `.method(…)`, `[index]`.
    Access,
}

const CLASSES: usize = Class::Access as usize + 1;

/// One bracket level while scanning (or the level outside every bracket). It covers one
/// element: the elements of a set, record or argument list are siblings, not nested, so a
/// comma starts a fresh level.
#[derive(Debug, Default, Clone, Copy)]
struct Level {
    /// Per class, the operators in the current operand of the next looser class.
    chained: [usize; CLASSES],
    /// Per class, the most operators an earlier operand chained.
    most_chained: [usize; CLASSES],
    /// The deepest bracket closed so far, as its own depth plus one for the bracket.
    deepest_closed: usize,
}

impl Level {
    fn operator(&mut self, class: Class) {
        self.chained[class as usize] += 1;
        self.new_operand_after(class);
    }

    /// The tighter classes than `class` start a new operand.
    fn new_operand_after(&mut self, class: Class) {
        for tighter in class as usize + 1..CLASSES {
            self.most_chained[tighter] = self.most_chained[tighter].max(self.chained[tighter]);
            self.chained[tighter] = 0;
        }
    }

    /// Levels of operators on the deepest path through this level's operators.
    fn operator_depth(&self) -> usize {
        self.chained
            .iter()
            .zip(&self.most_chained)
            .map(|(chained, most)| chained.max(most))
            .sum()
    }
}

/// Refuses a text larger or nested deeper than the limits above, naming the limit and where
/// it was exceeded. Strings and `//` comments are skipped as Cedar's lexer skips them, so
/// brackets inside a `like` pattern or a comment cost nothing.
pub(crate) fn check_policy_text(text: &str) -> Result<(), PolicyError> {
    if text.len() > MAX_POLICY_BYTES {
        return Err(PolicyError::OverLimit {
            message: format!(
                "the policy is {} bytes; the limit is {MAX_POLICY_BYTES}",
                text.len()
            ),
            location: None,
        });
    }
    let bytes = text.as_bytes();
    let mut current = Level::default();
    // The levels enclosing `current`, outermost first: one per open bracket.
    let mut enclosing: Vec<Level> = Vec::with_capacity(MAX_POLICY_NESTING);
    let mut next = 0;
    while next < bytes.len() {
        let start = next;
        next += 1;
        let two_bytes = |second: u8| bytes.get(start + 1) == Some(&second);
        match bytes[start] {
            b'"' => {
                next = string_end(bytes, next);
                continue;
            }
            b'/' if two_bytes(b'/') => {
                next = line_end(bytes, next);
                continue;
            }
            open @ (b'(' | b'[' | b'{') => {
                if enclosing.len() == MAX_POLICY_NESTING {
                    return Err(over_limit(
                        text,
                        start,
                        format!(
                            "(), [] and {{}} nest more than {MAX_POLICY_NESTING} levels deep; \
                             the limit is {MAX_POLICY_NESTING}"
                        ),
                    ));
                }
                if open == b'[' {
                    current.operator(Class::Access);
                }
                enclosing.push(std::mem::take(&mut current));
            }
            b')' | b']' | b'}' => {
                // An unbalanced closing bracket is Cedar's to report.
                if let Some(parent) = enclosing.pop() {
                    let closed = std::mem::replace(&mut current, parent);
                    current.deepest_closed = current
                        .deepest_closed
                        .max(1 + closed.operator_depth() + closed.deepest_closed);
                }
            }
            b',' => current = Level::default(),
            b'&' => {
                next += usize::from(two_bytes(b'&'));
                current.operator(Class::And);
            }
            b'|' => {
                next += usize::from(two_bytes(b'|'));
                current.operator(Class::Or);
            }
            b'=' | b'<' | b'>' => {
                next += usize::from(two_bytes(b'='));
                current.operator(Class::Relation);
            }
            b'!' if two_bytes(b'=') => {
                next += 1;
                current.operator(Class::Relation);
            }
            b'!' => current.operator(Class::Not),
            b'+' | b'-' => current.operator(Class::Sum),
            b'*' | b'/' | b'%' => current.operator(Class::Product),
            b'.' => current.operator(Class::Access),
            b'_' | b'a'..=b'z' | b'A'..=b'Z' => {
                while next < bytes.len()
                    && (bytes[next].is_ascii_alphanumeric() || bytes[next] == b'_')
                {
                    next += 1;
                }
                match &bytes[start..next] {
                    b"when" | b"unless" => current.operator(Class::Condition),
                    b"if" => current.operator(Class::If),
                    b"then" | b"else" => current.new_operand_after(Class::If),
                    b"in" | b"has" | b"like" | b"is" => current.operator(Class::Relation),
                    _ => continue,
                }
            }
            _ => continue,
        }
        if depth(&current, &enclosing) > MAX_POLICY_DEPTH {
            return Err(over_limit(
                text,
                start,
                format!(
                    "the expression is more than {MAX_POLICY_DEPTH} levels deep, counting \
                     brackets and chained operators along one path; the limit is \
                     {MAX_POLICY_DEPTH}"
                ),
            ));
        }
    }
    Ok(())
}

/// The depth of the deepest path seen so far, through the brackets still open.
fn depth(current: &Level, enclosing: &[Level]) -> usize {
    enclosing.iter().rev().fold(
        current.operator_depth() + current.deepest_closed,
        |below, level| level.operator_depth() + level.deepest_closed.max(1 + below),
    )
}

/// The index after a string literal's closing quote (`from` is just after the opening one).
/// A backslash escapes the next byte, as in Cedar's lexer.
fn string_end(bytes: &[u8], mut from: usize) -> usize {
    while from < bytes.len() {
        match bytes[from] {
            b'\\' => from += 2,
            b'"' => return from + 1,
            _ => from += 1,
        }
    }
    bytes.len()
}

/// The index of the end of a `//` comment's line.
fn line_end(bytes: &[u8], from: usize) -> usize {
    bytes[from..]
        .iter()
        .position(|b| matches!(b, b'\n' | b'\r'))
        .map_or(bytes.len(), |offset| from + offset)
}

fn over_limit(text: &str, offset: usize, message: String) -> PolicyError {
    PolicyError::OverLimit {
        message,
        location: Some(super::line_column(text, offset)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ActionRisk, AgentStatus, RiskTier, SourceTrust, Verdict};
    use crate::policy::{
        PolicyDocument, PolicyEngine, PolicyInput, PolicyOutcome, PolicyPrincipal, PolicyResource,
    };
    use proptest::prelude::*;

    /// A tokio worker thread's default stack.
    const WORKER_STACK: usize = 2 * 1024 * 1024;
    /// Stack used up before the compile starts: room for the frames above it in the server
    /// (runtime, hyper, axum, the handler) and for builds with larger frames than this one.
    const CALLERS_RESERVE: usize = 512 * 1024;

    /// Runs `f` on a new thread with a worker's stack, of which [`CALLERS_RESERVE`] is taken.
    /// A stack overflow here aborts the test binary: that is the failure these tests look for.
    fn on_worker_stack<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        std::thread::Builder::new()
            .stack_size(WORKER_STACK)
            .spawn(move || {
                let reserve = [0u8; CALLERS_RESERVE];
                std::hint::black_box(&reserve);
                let result = f();
                std::hint::black_box(&reserve);
                result
            })
            .expect("spawn a thread")
            .join()
            .expect("compiling never panics")
    }

    /// Compiles one tenant policy and, if it compiles, evaluates one call with it, all on a
    /// worker's stack (the engine is dropped there too).
    fn compile_and_evaluate(text: String) -> Result<PolicyOutcome, PolicyError> {
        on_worker_stack(move || {
            let engine = PolicyEngine::compile(&[PolicyDocument {
                id: "deep".into(),
                text,
            }])?;
            Ok(engine.evaluate(&PolicyInput {
                principal: &PolicyPrincipal::new("agt_1", RiskTier::Low, AgentStatus::Active),
                resource: &PolicyResource::new("github", "merge_pull_request"),
                target: Some("payments#1"),
                source_trust: SourceTrust::TrustedInternalSigned,
                mutates_state: true,
                risk: ActionRisk::Medium,
                risk_score: 40,
                registered: true,
            }))
        })
    }

    /// `permit … when { ((…(true)…)) };`, `depth` parentheses deep.
    fn audit_parentheses(depth: usize) -> String {
        format!(
            "permit (principal, action, resource) when {{ {}true{} }};",
            "(".repeat(depth),
            ")".repeat(depth)
        )
    }

    /// `permit … when { (true && (true && … true)) };`, `depth` conjunctions deep.
    fn audit_nested_and(depth: usize) -> String {
        let condition = format!("{}true{}", "(true && ".repeat(depth), ")".repeat(depth));
        format!("permit (principal, action, resource) when {{ {condition} }};")
    }

    /// `permit … when { true && true && … };` with `length` operators.
    fn audit_chained_and(length: usize) -> String {
        let condition = vec!["true"; length + 1].join(" && ");
        format!("permit (principal, action, resource) when {{ {condition} }};")
    }

    fn policy(condition: &str) -> String {
        format!(
            "permit (principal == Aegis::Agent::\"agt_1\", action == Aegis::Action::\"call\", \
             resource in Aegis::Tool::\"github\")\nwhen {{ {condition} }};"
        )
    }

    fn assert_over_limit(text: &str, limit: usize) {
        let error = check_policy_text(text).unwrap_err();
        assert!(matches!(error, PolicyError::OverLimit { .. }), "{error:?}");
        assert!(
            error.to_string().contains(&format!("limit is {limit}")),
            "{error}"
        );
        assert_eq!(error.field(), "text");
    }

    /// The payloads of the audit: each crashed the gateway through `POST /v1/policies`.
    #[test]
    fn the_audit_payloads_are_refused_naming_the_limit() {
        let parens = audit_parentheses(200);
        assert!(parens.len() < 500, "about 450 bytes: {}", parens.len());
        assert_over_limit(&parens, MAX_POLICY_NESTING);
        let nested_and = audit_nested_and(150);
        assert_over_limit(&nested_and, MAX_POLICY_NESTING);
        let chained_and = audit_chained_and(150);
        assert_over_limit(&chained_and, MAX_POLICY_DEPTH);

        // Through the engine, on a worker's stack: refused before Cedar parses anything.
        for text in [parens, nested_and, chained_and] {
            let error = compile_and_evaluate(text).unwrap_err();
            assert!(matches!(error, PolicyError::OverLimit { .. }), "{error:?}");
            assert!(error.location().is_some(), "{error}");
        }
    }

    #[test]
    fn limits_name_where_they_were_exceeded() {
        let text = format!(
            "permit (principal, action, resource)\nwhen {{ {} }};",
            "(".repeat(40)
        );
        let error = check_policy_text(&text).unwrap_err();
        // `when {` is the first bracket of line 2; the 32nd `(` after it is the 33rd bracket.
        let column = "when { ".len() + 32;
        assert_eq!(
            error.location(),
            Some(format!("2:{column}").as_str()),
            "{error}"
        );
    }

    #[test]
    fn size_is_limited_before_anything_else() {
        let filler = |len: usize| {
            let text = policy(&format!("context.target == \"{}\"", "x".repeat(len)));
            let padding = MAX_POLICY_BYTES.saturating_sub(text.len());
            policy(&format!(
                "context.target == \"{}\"",
                "x".repeat(len + padding)
            ))
        };
        let at_limit = filler(0);
        assert_eq!(at_limit.len(), MAX_POLICY_BYTES);
        assert_eq!(check_policy_text(&at_limit), Ok(()));
        let over = format!("{at_limit} ");
        let error = check_policy_text(&over).unwrap_err();
        assert!(
            error
                .to_string()
                .contains(&format!("limit is {MAX_POLICY_BYTES}")),
            "{error}"
        );
    }

    #[test]
    fn strings_and_comments_cost_nothing_and_elements_are_siblings() {
        let deep = "(".repeat(1000);
        for condition in [
            // Brackets and operators inside a `like` pattern, with escaped quotes.
            format!("context has target && context.target like \"\\\"{deep}&&&&*\""),
            // A comment runs to the end of its line.
            format!("// {deep} && || if\ncontext.mutates_state"),
            // A long set of small expressions is wide, not deep.
            format!("[{}].contains(2)", vec!["1 + 1"; 500].join(", ")),
            // Words that merely contain keywords are not keywords.
            "principal.risk_tier == \"within_isle_hash_unlikely\"".to_owned(),
        ] {
            let text = policy(&condition);
            assert_eq!(check_policy_text(&text), Ok(()), "{text}");
            let outcome = compile_and_evaluate(text).expect("compiles");
            assert_eq!(outcome.verdict, Verdict::Allow);
        }
        // Unbalanced and unterminated texts are Cedar's to refuse, with a location.
        for broken in [
            ")))) permit",
            "permit (principal, action, resource) when { \"((((",
            "}}}}",
        ] {
            assert_eq!(check_policy_text(broken), Ok(()));
            let error = compile_and_evaluate(broken.to_owned()).unwrap_err();
            assert!(error.location().is_some(), "{broken}: {error}");
        }
    }

    /// A family of ever deeper conditions: `build(n, leaf)` nests `leaf` `n` levels deep, at
    /// the position Cedar reaches last.
    struct Shape {
        name: &'static str,
        build: fn(usize, &str) -> String,
        /// Whether the shape type-checks with a well-typed leaf (and can then be evaluated).
        well_typed: bool,
    }

    const GOOD: &str = "context.mutates_state";
    const GOOD_LONG: &str = "context.risk_score";
    /// An attribute the schema does not have: the validator must find it, however deep.
    const POISON: &str = "context.no_such_fact";

    fn long_leaf(leaf: &str) -> &str {
        if leaf == GOOD { GOOD_LONG } else { leaf }
    }

    const SHAPES: &[Shape] = &[
        Shape {
            name: "parentheses",
            build: |n, leaf| format!("{}{leaf}{}", "(".repeat(n), ")".repeat(n)),
            well_typed: true,
        },
        Shape {
            name: "sets",
            build: |n, leaf| {
                let set = format!("{}{leaf}{}", "[".repeat(n), "]".repeat(n));
                format!("{set} == {set}")
            },
            well_typed: true,
        },
        Shape {
            name: "records",
            build: |n, leaf| format!("{}{leaf}{} has a", "{a: ".repeat(n), "}".repeat(n)),
            well_typed: true,
        },
        Shape {
            name: "method arguments",
            build: |n, leaf| format!("{}{leaf}{}", "[true].contains(".repeat(n), ")".repeat(n)),
            well_typed: true,
        },
        Shape {
            name: "nested conjunctions",
            build: |n, leaf| {
                format!(
                    "{}{leaf}{}",
                    format!("({GOOD} && ").repeat(n),
                    ")".repeat(n)
                )
            },
            well_typed: true,
        },
        Shape {
            name: "negations",
            build: |n, leaf| format!("{}{leaf}{}", "!(".repeat(n), ")".repeat(n)),
            well_typed: true,
        },
        Shape {
            name: "arithmetic negations",
            build: |n, leaf| {
                format!(
                    "{}{}{} == 1",
                    "-(".repeat(n),
                    long_leaf(leaf),
                    ")".repeat(n)
                )
            },
            well_typed: true,
        },
        Shape {
            name: "a chain of &&",
            build: |n, leaf| format!("{leaf}{}", format!(" && {GOOD}").repeat(n)),
            well_typed: true,
        },
        Shape {
            name: "a chain of ||",
            build: |n, leaf| format!("{leaf}{}", format!(" || {GOOD}").repeat(n)),
            well_typed: true,
        },
        Shape {
            name: "else-if chains",
            build: |n, leaf| format!("{}{leaf}", format!("if {GOOD} then {GOOD} else ").repeat(n)),
            well_typed: true,
        },
        Shape {
            name: "sums",
            build: |n, leaf| {
                format!(
                    "{}{} == 1",
                    long_leaf(leaf),
                    format!(" + {GOOD_LONG}").repeat(n)
                )
            },
            well_typed: true,
        },
        Shape {
            name: "products",
            build: |n, leaf| format!("{}{} == 1", long_leaf(leaf), " * 1".repeat(n)),
            well_typed: true,
        },
        Shape {
            name: "attribute accesses",
            build: |n, leaf| format!("{leaf}{} == 1", ".a".repeat(n)),
            well_typed: false,
        },
        Shape {
            name: "has paths",
            build: |n, leaf| format!("{leaf} && context has {}", vec!["a"; n.max(1)].join(".")),
            well_typed: true,
        },
        Shape {
            name: "when clauses",
            // `when { leaf } when { GOOD } … when { GOOD }`: Cedar joins the clauses with &&.
            build: |n, leaf| format!("{leaf}{}", format!(" }} when {{ {GOOD}").repeat(n)),
            well_typed: true,
        },
        Shape {
            name: "brackets and a chain at both limits",
            build: |n, leaf| {
                let brackets = n.min(MAX_POLICY_NESTING - 1);
                let chain = n - brackets;
                format!(
                    "{}{leaf}{}{}",
                    format!("({GOOD} && ").repeat(brackets),
                    format!(" && {GOOD}").repeat(chain),
                    ")".repeat(brackets)
                )
            },
            well_typed: true,
        },
    ];

    /// The deepest `n` of a shape that the limits admit.
    fn deepest_admitted(shape: &Shape) -> usize {
        let admitted = |n| check_policy_text(&policy(&(shape.build)(n, GOOD))).is_ok();
        let mut n = 0;
        while admitted(n + 1) {
            n += 1;
        }
        n
    }

    /// The deepest text of every shape the limits admit still compiles on a worker's stack
    /// (with room to spare), Cedar's validator still reaches its bottom (a poisoned leaf is
    /// found rather than skipped at Cedar's stack guard), and it evaluates without error.
    #[test]
    fn policies_at_the_limits_compile_validate_and_evaluate_on_a_worker_stack() {
        for shape in SHAPES {
            let n = deepest_admitted(shape);
            assert!(
                n >= MAX_POLICY_NESTING - 2,
                "{}: only {n} levels admitted",
                shape.name
            );
            let deeper = check_policy_text(&policy(&(shape.build)(n + 1, GOOD))).unwrap_err();
            assert!(
                deeper.to_string().contains("the limit is"),
                "{}: {deeper}",
                shape.name
            );

            let poisoned = compile_and_evaluate(policy(&(shape.build)(n, POISON)));
            match poisoned {
                Err(PolicyError::Invalid { message, location }) => {
                    assert!(
                        message.contains("no_such_fact"),
                        "{}: {message}",
                        shape.name
                    );
                    assert!(location.is_some(), "{}: {message}", shape.name);
                }
                other => panic!(
                    "{}: the validator missed the poisoned leaf: {other:?}",
                    shape.name
                ),
            }
            if shape.well_typed {
                let outcome = compile_and_evaluate(policy(&(shape.build)(n, GOOD)))
                    .unwrap_or_else(|e| panic!("{} at depth {n}: {e}", shape.name));
                assert_eq!(
                    outcome.verdict,
                    Verdict::Allow,
                    "{}: {}",
                    shape.name,
                    outcome.reason
                );
            }
        }
    }

    /// One layer wrapped around an expression: deep texts are built by folding a list of
    /// layers, so neither the generator nor the rendering recurses.
    #[derive(Debug, Clone)]
    enum Layer {
        Parentheses,
        Not,
        Negate,
        Set(String),
        Record(String),
        Attribute,
        Index,
        Has,
        Like,
        Contains(String),
        IsIn(String),
        Binary {
            operator: &'static str,
            other: String,
            inner_first: bool,
        },
        IfThenElse {
            branch: u8,
            a: String,
            b: String,
        },
    }

    impl Layer {
        fn wrap(&self, e: &str) -> String {
            match self {
                Layer::Parentheses => format!("({e})"),
                Layer::Not => format!("!{e}"),
                Layer::Negate => format!("-{e}"),
                Layer::Set(other) => format!("[{e}, {other}]"),
                Layer::Record(other) => format!("{{a: {e}, \"b c\": {other}}}"),
                Layer::Attribute => format!("{e}.risk_tier"),
                Layer::Index => format!("{e}[\"risk_tier\"]"),
                Layer::Has => format!("{e} has target"),
                Layer::Like => format!("{e} like \"pay*(\""),
                Layer::Contains(other) => format!("{e}.contains({other})"),
                Layer::IsIn(other) => format!("{e} is Aegis::Agent in {other}"),
                Layer::Binary {
                    operator,
                    other,
                    inner_first: true,
                } => format!("{e} {operator} {other}"),
                Layer::Binary {
                    operator,
                    other,
                    inner_first: false,
                } => format!("{other} {operator} {e}"),
                Layer::IfThenElse { branch: 0, a, b } => format!("if {e} then {a} else {b}"),
                Layer::IfThenElse { branch: 1, a, b } => format!("if {a} then {e} else {b}"),
                Layer::IfThenElse { a, b, .. } => format!("if {a} then {b} else {e}"),
            }
        }
    }

    const ATOMS: &[&str] = &[
        "context.mutates_state",
        "context.risk_score",
        "context.source_trust",
        "principal",
        "principal.risk_tier",
        "resource",
        "resource.tool",
        "context",
        "true",
        "7",
        "\"s(t[r{\\\"\"",
        "Aegis::Tool::\"github\"",
        "[1, 2]",
        "{a: 1}",
        "true // ((( && ||\n",
    ];
    const OPERATORS: &[&str] = &[
        "&&", "||", "==", "!=", "<", "<=", ">", ">=", "+", "-", "*", "in",
    ];

    /// A flat expression of up to `width` atoms: wide, shallow siblings.
    fn flat_expression(width: usize) -> impl Strategy<Value = String> {
        prop::collection::vec(
            (prop::sample::select(OPERATORS), prop::sample::select(ATOMS)),
            0..width,
        )
        .prop_flat_map(|rest| {
            prop::sample::select(ATOMS).prop_map(move |first| {
                rest.iter()
                    .fold(first.to_owned(), |e, (op, atom)| format!("{e} {op} {atom}"))
            })
        })
    }

    fn layer() -> impl Strategy<Value = Layer> {
        let other = || flat_expression(6);
        prop_oneof![
            3 => Just(Layer::Parentheses),
            1 => Just(Layer::Not),
            1 => Just(Layer::Negate),
            1 => other().prop_map(Layer::Set),
            1 => other().prop_map(Layer::Record),
            1 => Just(Layer::Attribute),
            1 => Just(Layer::Index),
            1 => Just(Layer::Has),
            1 => Just(Layer::Like),
            1 => other().prop_map(Layer::Contains),
            1 => other().prop_map(Layer::IsIn),
            6 => (prop::sample::select(OPERATORS), other(), any::<bool>())
                .prop_map(|(operator, other, inner_first)| Layer::Binary { operator, other, inner_first }),
            2 => (0u8..3, other(), other()).prop_map(|(branch, a, b)| Layer::IfThenElse { branch, a, b }),
        ]
    }

    fn deep_policy() -> impl Strategy<Value = String> {
        (
            prop::sample::select(vec!["permit", "forbid"]),
            flat_expression(40),
            prop::collection::vec(layer(), 0..200),
            prop::option::of(flat_expression(40)),
        )
            .prop_map(|(effect, core, layers, unless)| {
                let condition = layers.iter().fold(core, |e, layer| layer.wrap(&e));
                let unless = unless
                    .map(|u| format!(" unless {{ {u} }}"))
                    .unwrap_or_default();
                format!("{effect} (principal, action, resource)\nwhen {{ {condition} }}{unless};")
            })
    }

    /// One layer that keeps a boolean expression boolean, so deep texts type-check and the
    /// validator and the evaluator go all the way down.
    #[derive(Debug, Clone)]
    enum BoolLayer {
        Parentheses,
        Not,
        And(&'static str),
        Or(&'static str),
        Condition(&'static str),
        Branch(&'static str),
        Equals(&'static str),
        SetContains(&'static str),
        RecordAttribute(&'static str),
        RecordIndex,
        IfLong,
    }

    impl BoolLayer {
        fn wrap(&self, e: &str) -> String {
            match self {
                BoolLayer::Parentheses => format!("({e})"),
                BoolLayer::Not => format!("!({e})"),
                BoolLayer::And(b) => format!("{e} && {b}"),
                BoolLayer::Or(b) => format!("{b} || {e}"),
                BoolLayer::Condition(b) => format!("(if {e} then {b} else {b})"),
                BoolLayer::Branch(b) => format!("(if {b} then {b} else {e})"),
                BoolLayer::Equals(b) => format!("({e}) == ({b})"),
                BoolLayer::SetContains(b) => format!("[{e}, {b}].contains({b})"),
                BoolLayer::RecordAttribute(b) => format!("{{a: {e}, b: {b}}}.a"),
                BoolLayer::RecordIndex => format!("{{\"a b\": {e}}}[\"a b\"]"),
                BoolLayer::IfLong => {
                    format!("(if {e} then context.risk_score + 1 else -1) * 2 > context.risk_score")
                }
            }
        }
    }

    const BOOLEANS: &[&str] = &[
        "context.mutates_state",
        "context.registered",
        "true",
        "principal.risk_tier == \"high\"",
        "(context has target && context.target like \"pay*\")",
        "context.source_trust == \"unknown\"",
        "resource.tool like \"g*\"",
        "principal is Aegis::Agent",
        "resource in Aegis::Tool::\"github\"",
    ];

    fn bool_layer() -> impl Strategy<Value = BoolLayer> {
        let b = || prop::sample::select(BOOLEANS);
        prop_oneof![
            Just(BoolLayer::Parentheses),
            Just(BoolLayer::Not),
            b().prop_map(BoolLayer::And),
            b().prop_map(BoolLayer::Or),
            b().prop_map(BoolLayer::Condition),
            b().prop_map(BoolLayer::Branch),
            b().prop_map(BoolLayer::Equals),
            b().prop_map(BoolLayer::SetContains),
            b().prop_map(BoolLayer::RecordAttribute),
            Just(BoolLayer::RecordIndex),
            Just(BoolLayer::IfLong),
        ]
    }

    fn well_typed_deep_policy() -> impl Strategy<Value = String> {
        (
            prop::sample::select(BOOLEANS),
            prop::collection::vec(bool_layer(), 0..160),
        )
            .prop_map(|(core, layers)| {
                policy(
                    &layers
                        .iter()
                        .fold(core.to_owned(), |e, layer| layer.wrap(&e)),
                )
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        /// Deep, well-typed policies: under the limits they compile and evaluate without an
        /// error (Cedar's stack guards never trip); over them they are refused; nothing
        /// overflows the stack.
        #[test]
        fn well_typed_policies_under_the_limits_compile_and_evaluate(text in well_typed_deep_policy()) {
            let within_limits = check_policy_text(&text).is_ok();
            match compile_and_evaluate(text.clone()) {
                Ok(outcome) => {
                    prop_assert!(within_limits);
                    prop_assert_eq!(outcome.verdict, Verdict::Allow, "{}", outcome.reason);
                }
                Err(error) => {
                    prop_assert!(!within_limits, "{error}\n{text}");
                    let is_over_limit = matches!(error, PolicyError::OverLimit { .. });
                    prop_assert!(is_over_limit);
                }
            }
        }

        /// Whatever the nesting, compiling on a worker's stack either succeeds or refuses
        /// the text saying where; it never overflows the stack (which would abort the test).
        #[test]
        fn compile_succeeds_or_refuses_with_a_location(text in deep_policy()) {
            let within_limits = check_policy_text(&text).is_ok();
            match compile_and_evaluate(text.clone()) {
                Ok(_) => prop_assert!(within_limits),
                Err(error) => {
                    prop_assert!(error.location().is_some(), "{error}\n{text}");
                    prop_assert_eq!(matches!(error, PolicyError::OverLimit { .. }), !within_limits);
                }
            }
        }
    }
}
