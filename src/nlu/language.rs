//! The language of a message (whatlang), restricted to the languages a deployment serves:
//! open-set detection on short messages confuses neighbours (whatlang reads short Russian as
//! Ukrainian).

/// Two-letter codes and whatlang's languages, for the languages a deployment can configure.
const LANGUAGES: [(&str, whatlang::Lang); 12] = {
    use whatlang::Lang::*;
    [
        ("en", Eng),
        ("ru", Rus),
        ("vi", Vie),
        ("zh", Cmn),
        ("uk", Ukr),
        ("de", Deu),
        ("fr", Fra),
        ("es", Spa),
        ("pt", Por),
        ("it", Ita),
        ("ja", Jpn),
        ("ko", Kor),
    ]
};

/// What the detector says about one text.
#[derive(Debug, Clone, PartialEq)]
pub struct Detected {
    pub code: &'static str,
    pub confidence: f64,
    pub reliable: bool,
    /// The script alone identifies the language (Cyrillic among the configured ones, Han...):
    /// trustworthy even for two words.
    pub script_sure: bool,
}

pub struct LanguageDetector {
    detector: whatlang::Detector,
}

fn two_letter(lang: whatlang::Lang) -> &'static str {
    LANGUAGES
        .iter()
        .find(|(_, l)| *l == lang)
        .map(|(code, _)| *code)
        .unwrap_or_else(|| lang.code())
}

/// Letters only Vietnamese uses among the supported languages (ă, ơ, ư, đ and the tone-marked
/// vowels): a short Latin-script message with one of them is Vietnamese even when the statistical
/// guess is unsure.
fn is_vietnamese_letter(c: char) -> bool {
    let c = c.to_lowercase().next().unwrap_or(c);
    "ăâđêôơưạảấầẩẫậắằẳẵặẹẻẽếềểễệỉịọỏốồổỗộớờởỡợụủứừửữựỳỵỷỹ".contains(c)
}

impl LanguageDetector {
    /// `languages`: two-letter codes; an unknown one is a start-up error naming the known ones.
    pub fn new(languages: &[String]) -> anyhow::Result<Self> {
        let mut allow = Vec::new();
        for code in languages {
            let lang = LANGUAGES
                .iter()
                .find(|(c, _)| c == code)
                .map(|(_, l)| *l)
                .ok_or_else(|| {
                    let known: Vec<&str> = LANGUAGES.iter().map(|(c, _)| *c).collect();
                    anyhow::anyhow!(
                        "unsupported language '{code}' (supported: {})",
                        known.join(", ")
                    )
                })?;
            allow.push(lang);
        }
        anyhow::ensure!(
            !allow.is_empty(),
            "at least one language must be configured"
        );
        Ok(Self {
            detector: whatlang::Detector::with_allowlist(allow),
        })
    }

    pub fn detect(&self, text: &str) -> Option<Detected> {
        let info = self.detector.detect(text)?;
        let code = two_letter(info.lang());
        Some(Detected {
            code,
            confidence: info.confidence(),
            reliable: info.is_reliable(),
            script_sure: matches!(code, "ru" | "zh" | "uk" | "ja" | "ko")
                || (code == "vi" && text.chars().any(is_vietnamese_letter)),
        })
    }
}
