//! CEL expressions of `[[source.policy]]` and `[[app.policy]]`, compiled
//! once, by validation: a typo stops the config, and the validated model
//! carries the program every evaluation runs, so nothing compiles it again.

use std::fmt;
use std::sync::Arc;

use serde::{Serialize, Serializer};

/// A CEL expression as written, with its compiled program.
#[derive(Clone)]
pub struct Expression {
    source: String,
    program: Arc<cel::Program>,
}

/// A CEL expression that does not parse: the parser's message, whose first
/// line says where; fix the expression.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the CEL expression does not parse: {0}")]
pub struct ExpressionError(pub String);

impl Expression {
    /// Compiles `source`.
    pub fn compile(source: &str) -> Result<Expression, ExpressionError> {
        let program = cel::Program::compile(source).map_err(|e| ExpressionError(e.to_string()))?;
        Ok(Expression {
            source: source.to_string(),
            program: Arc::new(program),
        })
    }

    /// The expression as written in the config.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The compiled program, ready to execute.
    pub fn program(&self) -> &cel::Program {
        &self.program
    }
}

impl fmt::Debug for Expression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The source says all there is; the AST would only be noise.
        f.debug_tuple("Expression").field(&self.source).finish()
    }
}

impl PartialEq for Expression {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl Serialize for Expression {
    /// As written: `portcullis check` shows it, and a reload compares it.
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.source)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cel_expression_that_does_not_parse_is_refused_and_one_that_does_keeps_its_text() {
        assert!(Expression::compile("user.groups.exists(").is_err());
        let e = Expression::compile("'admins' in user.groups").unwrap();
        assert_eq!(e.source(), "'admins' in user.groups");
        assert_eq!(
            serde_json::to_string(&e).unwrap(),
            r#""'admins' in user.groups""#
        );
    }
}
