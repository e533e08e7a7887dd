//! A knowledge base article: one Markdown file with YAML front matter, and the texts it is
//! indexed under (title, each example question, body chunks).

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

/// An article as stored and served by the API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Article {
    /// Lowercase letters, digits and `-`; the file name without `.md`.
    pub id: String,
    pub title: String,
    /// Example customer questions this article answers.
    #[serde(default)]
    pub questions: Vec<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    /// Language the article is written in (two letters), if given.
    #[serde(default)]
    pub lang: Option<String>,
    /// The answer, in Markdown.
    pub body: String,
}

/// The front matter fields.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FrontMatter {
    id: String,
    title: String,
    #[serde(default)]
    questions: Vec<String>,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    lang: Option<String>,
}

/// Why an article file was refused, with the line it is about (1-based, in the file).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct ArticleError {
    pub line: usize,
    pub message: String,
}

fn err(line: usize, message: impl Into<String>) -> ArticleError {
    ArticleError {
        line,
        message: message.into(),
    }
}

/// Which part of an article a vector stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Part {
    Title,
    Question,
    Chunk,
}

impl Part {
    pub fn as_str(self) -> &'static str {
        match self {
            Part::Title => "title",
            Part::Question => "question",
            Part::Chunk => "chunk",
        }
    }
}

impl Article {
    /// Checks the fields an API caller or a file may get wrong.
    pub fn validate(&self) -> Result<(), String> {
        if self.id.is_empty()
            || self.id.len() > 100
            || !self
                .id
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        {
            return Err(format!(
                "id '{}' must be 1-100 lowercase letters, digits or '-'",
                self.id
            ));
        }
        if self.title.trim().is_empty() {
            return Err("title must not be empty".into());
        }
        if self.body.trim().is_empty() {
            return Err("the answer (body) must not be empty".into());
        }
        if self.questions.iter().any(|q| q.trim().is_empty()) {
            return Err("questions must not be empty strings".into());
        }
        Ok(())
    }

    /// Parses a Markdown file with YAML front matter between `---` lines.
    pub fn parse(text: &str) -> Result<Article, ArticleError> {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let mut lines = text.lines();
        if lines.next().map(str::trim_end) != Some("---") {
            return Err(err(
                1,
                "the file must start with a '---' line opening the front matter",
            ));
        }
        let mut yaml = String::new();
        let mut closed_at = None;
        for (i, line) in lines.by_ref().enumerate() {
            if line.trim_end() == "---" {
                closed_at = Some(i + 2);
                break;
            }
            yaml.push_str(line);
            yaml.push('\n');
        }
        let Some(closing_line) = closed_at else {
            return Err(err(1, "the front matter is not closed by a '---' line"));
        };
        let front: FrontMatter = serde_norway::from_str(&yaml).map_err(|e| {
            // The YAML starts on the file's second line.
            let line = e.location().map(|l| l.line() + 1).unwrap_or(2);
            err(line, format!("front matter: {e}"))
        })?;
        let body: String = lines.collect::<Vec<_>>().join("\n").trim().to_string();
        let article = Article {
            id: front.id,
            title: front.title,
            questions: front.questions,
            tags: front.tags,
            lang: front.lang,
            body,
        };
        article.validate().map_err(|m| {
            let line = if m.contains("body") {
                closing_line + 1
            } else {
                2
            };
            err(line, m)
        })?;
        Ok(article)
    }

    /// Body chunks of about `max_chars` characters, cut at paragraph (then sentence) boundaries.
    pub fn chunks(&self, max_chars: usize) -> Vec<String> {
        let mut chunks = Vec::new();
        let mut current = String::new();
        for para in self
            .body
            .split("\n\n")
            .map(str::trim)
            .filter(|p| !p.is_empty())
        {
            if !current.is_empty() && current.chars().count() + para.chars().count() > max_chars {
                chunks.push(std::mem::take(&mut current));
            }
            if para.chars().count() > max_chars {
                for sentence in split_sentences(para) {
                    if !current.is_empty()
                        && current.chars().count() + sentence.chars().count() > max_chars
                    {
                        chunks.push(std::mem::take(&mut current));
                    }
                    if !current.is_empty() {
                        current.push(' ');
                    }
                    current.push_str(sentence);
                }
            } else {
                if !current.is_empty() {
                    current.push_str("\n\n");
                }
                current.push_str(para);
            }
        }
        if !current.trim().is_empty() {
            chunks.push(current);
        }
        chunks
    }

    /// Every text the article is indexed under, with its part.
    pub fn index_texts(&self, chunk_chars: usize) -> Vec<(Part, String)> {
        let mut out = vec![(Part::Title, self.title.clone())];
        out.extend(self.questions.iter().map(|q| (Part::Question, q.clone())));
        out.extend(
            self.chunks(chunk_chars)
                .into_iter()
                .map(|c| (Part::Chunk, c)),
        );
        out
    }

    /// Identifies what was embedded: same hash = nothing to re-embed.
    pub fn content_hash(&self, model: &str, chunk_chars: usize) -> String {
        let mut h = Sha256::new();
        h.update(model.as_bytes());
        h.update(chunk_chars.to_le_bytes());
        for (part, text) in self.index_texts(chunk_chars) {
            h.update(part.as_str().as_bytes());
            h.update([0]);
            h.update(text.as_bytes());
            h.update([0]);
        }
        h.update(self.lang.as_deref().unwrap_or("").as_bytes());
        h.update(self.tags.join("\u{1}").as_bytes());
        hex::encode(h.finalize())
    }
}

fn split_sentences(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    for (i, c) in text.char_indices() {
        if matches!(c, '.' | '!' | '?' | '。' | '！' | '？' | '\n') {
            let end = i + c.len_utf8();
            let s = text[start..end].trim();
            if !s.is_empty() {
                out.push(s);
            }
            start = end;
        }
    }
    let rest = text[start..].trim();
    if !rest.is_empty() {
        out.push(rest);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "---\nid: router-restart\ntitle: Restart your router\nquestions:\n  - My internet stopped\n  - No Wi-Fi\ntags: [internet]\nlang: en\n---\nUnplug it.\n\nWait 30 seconds.\n";

    #[test]
    fn parses_front_matter_and_body() {
        let a = Article::parse(GOOD).expect("valid");
        assert_eq!(a.id, "router-restart");
        assert_eq!(a.questions.len(), 2);
        assert_eq!(a.lang.as_deref(), Some("en"));
        assert_eq!(a.body, "Unplug it.\n\nWait 30 seconds.");
        let texts = a.index_texts(500);
        assert_eq!(texts[0], (Part::Title, "Restart your router".to_string()));
        assert_eq!(
            texts.iter().filter(|(p, _)| *p == Part::Question).count(),
            2
        );
        assert_eq!(texts.last().map(|t| t.0), Some(Part::Chunk));
    }

    #[test]
    fn errors_name_the_line() {
        let bad_yaml = "---\nid: x\ntitle: [unclosed\n---\nbody\n";
        let e = Article::parse(bad_yaml).unwrap_err();
        assert_eq!(e.line, 3, "{e}");
        let unknown = "---\nid: x\ntitle: t\nauthor: me\n---\nbody\n";
        let e = Article::parse(unknown).unwrap_err();
        assert!(e.message.contains("author"), "{e}");
        let no_body = "---\nid: x\ntitle: t\n---\n\n";
        assert!(Article::parse(no_body)
            .unwrap_err()
            .message
            .contains("body"));
        let bad_id = "---\nid: Bad Id\ntitle: t\n---\nbody\n";
        assert!(Article::parse(bad_id)
            .unwrap_err()
            .message
            .contains("lowercase"));
        assert_eq!(Article::parse("no front matter").unwrap_err().line, 1);
    }

    #[test]
    fn long_bodies_are_chunked_at_boundaries_and_hash_tracks_content() {
        let body = (0..20)
            .map(|i| format!("Sentence number {i} is here."))
            .collect::<Vec<_>>()
            .join(" ");
        let a = Article {
            id: "a".into(),
            title: "t".into(),
            questions: vec![],
            tags: vec![],
            lang: None,
            body,
        };
        let chunks = a.chunks(120);
        assert!(chunks.len() > 3);
        assert!(
            chunks
                .iter()
                .all(|c| c.chars().count() <= 120 && c.ends_with('.')),
            "{chunks:?}"
        );
        let mut b = a.clone();
        assert_eq!(a.content_hash("m", 120), b.content_hash("m", 120));
        b.title = "other".into();
        assert_ne!(a.content_hash("m", 120), b.content_hash("m", 120));
        assert_ne!(a.content_hash("m", 120), a.content_hash("m2", 120));
    }
}
