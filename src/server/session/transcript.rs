//! Partial and final text for one utterance: which words are committed (two
//! consecutive hypotheses agree on them, so UIs can show them as settled)
//! and which are still unstable. Committed text only ever grows within an
//! utterance; a final commits everything and starts the next utterance.

/// The split of one hypothesis.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Split {
    /// The whole hypothesis, as decoded.
    pub text: String,
    /// Words settled so far in this utterance.
    pub committed: String,
    /// The rest of the hypothesis after the committed words.
    pub unstable: String,
}

/// Agreement state across the partial hypotheses of one utterance.
#[derive(Debug, Default)]
pub struct Agreement {
    /// Words of the previous hypothesis.
    previous: Vec<String>,
    /// Words committed so far; a prefix of every later split's text.
    committed: Vec<String>,
}

impl Agreement {
    /// Splits a new partial hypothesis.
    pub fn partial(&mut self, text: &str) -> Split {
        let words = split_words(text);
        let agreed = common_prefix(&self.previous, &words);
        // Commit more only when the new agreement extends what is committed;
        // a hypothesis that disagrees with committed words never un-commits.
        // Committed words are kept verbatim (a later hypothesis may only
        // change their punctuation), so the committed string only grows.
        if agreed > self.committed.len() && starts_with(&words, &self.committed) {
            let n = self.committed.len();
            self.committed.extend_from_slice(&words[n..agreed]);
        }
        let unstable_from = common_prefix(&self.committed, &words);
        let unstable = words[unstable_from..].join(" ");
        self.previous = words;
        Split {
            text: text.trim().to_string(),
            committed: self.committed.join(" "),
            unstable,
        }
    }

    /// Splits a final: everything is committed, and the next utterance starts
    /// from nothing.
    pub fn finish(&mut self, text: &str) -> Split {
        *self = Self::default();
        let text = text.trim().to_string();
        Split {
            committed: text.clone(),
            text,
            unstable: String::new(),
        }
    }
}

fn split_words(text: &str) -> Vec<String> {
    text.split_whitespace().map(str::to_string).collect()
}

/// Length of the common prefix, comparing words without case or trailing
/// punctuation (Whisper often flips "meeting," to "meeting." between runs).
fn common_prefix(a: &[String], b: &[String]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| same_word(x, y)).count()
}

fn starts_with(words: &[String], prefix: &[String]) -> bool {
    common_prefix(words, prefix) == prefix.len()
}

fn same_word(a: &str, b: &str) -> bool {
    let norm = |w: &str| {
        w.trim_matches(|c: char| !c.is_alphanumeric())
            .to_lowercase()
    };
    norm(a) == norm(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_hypothesis_commits_nothing() {
        let mut a = Agreement::default();
        let s = a.partial("hello there");
        assert_eq!(s.committed, "");
        assert_eq!(s.unstable, "hello there");
    }

    #[test]
    fn agreement_of_two_hypotheses_is_committed() {
        let mut a = Agreement::default();
        a.partial("good morning every");
        let s = a.partial("good morning everyone let");
        assert_eq!(s.committed, "good morning");
        assert_eq!(s.unstable, "everyone let");
        let s = a.partial("good morning everyone let us begin");
        assert_eq!(s.committed, "good morning everyone let");
        assert_eq!(s.unstable, "us begin");
    }

    #[test]
    fn committed_text_never_shrinks() {
        let mut a = Agreement::default();
        a.partial("please call me");
        a.partial("please call me back");
        let before = a.partial("please call me back tomorrow").committed;
        assert_eq!(before, "please call me back");
        // A wobbly hypothesis does not take words back.
        let s = a.partial("please fall me back tomorrow");
        assert_eq!(s.committed, "please call me back");
        assert!(s.unstable.starts_with("fall"), "{s:?}");
    }

    #[test]
    fn punctuation_and_case_do_not_break_agreement() {
        let mut a = Agreement::default();
        a.partial("Good morning, everyone");
        let s = a.partial("good morning everyone. Let");
        assert_eq!(s.committed, "good morning everyone.");
    }

    #[test]
    fn committed_string_is_a_prefix_across_punctuation_changes() {
        let mut a = Agreement::default();
        a.partial("Good morning everyone, let");
        let first = a.partial("Good morning everyone, let us").committed;
        let next = a.partial("Good morning, everyone. Let us begin").committed;
        assert!(next.starts_with(&first), "{first:?} → {next:?}");
        assert_eq!(next, "Good morning everyone, let us");
    }

    #[test]
    fn final_commits_everything_and_resets() {
        let mut a = Agreement::default();
        a.partial("one two");
        a.partial("one two three");
        let f = a.finish(" one two three four ");
        assert_eq!(f.committed, "one two three four");
        assert_eq!(f.unstable, "");
        let s = a.partial("next");
        assert_eq!(s.committed, "");
    }
}
