//! The `kb_articles` table: the articles themselves and what was embedded for each.

use frontdesk_channels::now_ms;
use sqlx::Row;

use super::Article;
use crate::store::{db, Result, Store, StoreError};

/// An article's row besides the article: where it came from and what was embedded.
#[derive(Debug, Clone)]
pub struct StoredArticle {
    pub article: Article,
    pub source: Option<String>,
    pub content_hash: String,
    pub vectors: i64,
    pub updated_at: i64,
}

fn row_to_article(row: &sqlx::any::AnyRow) -> Result<StoredArticle> {
    let get = |e| StoreError::Db("reading an article", e);
    let tags: String = row.try_get("tags").map_err(get)?;
    let questions: String = row.try_get("questions").map_err(get)?;
    Ok(StoredArticle {
        article: Article {
            id: row.try_get("id").map_err(get)?,
            title: row.try_get("title").map_err(get)?,
            questions: serde_json::from_str(&questions).unwrap_or_default(),
            tags: serde_json::from_str(&tags).unwrap_or_default(),
            lang: row.try_get("lang").map_err(get)?,
            body: row.try_get("body").map_err(get)?,
        },
        source: row.try_get("source").map_err(get)?,
        content_hash: row.try_get("content_hash").map_err(get)?,
        vectors: row.try_get("vectors").map_err(get)?,
        updated_at: row.try_get("updated_at").map_err(get)?,
    })
}

/// Identifies what the stored articles say, whichever gateway process wrote them: a hash of
/// every article's id and content hash (which covers each text the article is indexed under).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KbRevision(u64);

const COLUMNS: &str =
    "id, title, lang, tags, questions, body, source, content_hash, vectors, updated_at";

impl Store {
    pub async fn kb_list(&self) -> Result<Vec<StoredArticle>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM kb_articles ORDER BY id"
        )))
        .fetch_all(&self.read)
        .await
        .map_err(db("listing articles"))?;
        rows.iter().map(row_to_article).collect()
    }

    pub async fn kb_get(&self, id: &str) -> Result<Option<StoredArticle>> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM kb_articles WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(&self.write)
        .await
        .map_err(db("reading an article"))?;
        row.as_ref().map(row_to_article).transpose()
    }

    pub async fn kb_count(&self) -> Result<i64> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM kb_articles")
            .fetch_one(&self.read)
            .await
            .map_err(db("counting articles"))?;
        row.try_get("n").map_err(db("counting articles"))
    }

    pub async fn kb_revision(&self) -> Result<KbRevision> {
        use std::hash::{Hash, Hasher};
        let rows = sqlx::query("SELECT id, content_hash FROM kb_articles ORDER BY id")
            .fetch_all(&self.read)
            .await
            .map_err(db("reading the knowledge base revision"))?;
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        for row in &rows {
            let get = |e| StoreError::Db("reading the knowledge base revision", e);
            row.try_get::<String, _>("id")
                .map_err(get)?
                .hash(&mut hasher);
            row.try_get::<String, _>("content_hash")
                .map_err(get)?
                .hash(&mut hasher);
        }
        Ok(KbRevision(hasher.finish()))
    }

    pub async fn kb_upsert(
        &self,
        article: &Article,
        source: Option<&str>,
        content_hash: &str,
        vectors: i64,
    ) -> Result<()> {
        let now = now_ms();
        let tags = serde_json::to_string(&article.tags).unwrap_or_else(|_| "[]".into());
        let questions = serde_json::to_string(&article.questions).unwrap_or_else(|_| "[]".into());
        sqlx::query(
            "INSERT INTO kb_articles (id, title, lang, tags, questions, body, source, content_hash, \
             vectors, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10) \
             ON CONFLICT (id) DO UPDATE SET title = $2, lang = $3, tags = $4, questions = $5, \
             body = $6, source = $7, content_hash = $8, vectors = $9, updated_at = $10",
        )
        .bind(&article.id)
        .bind(&article.title)
        .bind(article.lang.as_deref())
        .bind(tags)
        .bind(questions)
        .bind(&article.body)
        .bind(source)
        .bind(content_hash)
        .bind(vectors)
        .bind(now)
        .execute(&self.write)
        .await
        .map_err(db("storing an article"))?;
        Ok(())
    }

    pub async fn kb_delete(&self, id: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM kb_articles WHERE id = $1")
            .bind(id)
            .execute(&self.write)
            .await
            .map_err(db("deleting an article"))?;
        Ok(done.rows_affected() == 1)
    }
}
