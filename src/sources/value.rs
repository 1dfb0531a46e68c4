//! Turning what systems store into JSON: PostgreSQL columns by type, and CSV cells.

use std::error::Error;

use serde_json::{Map, Number, Value};
use tokio_postgres::types::{FromSql, Type};

type BoxError = Box<dyn Error + Sync + Send>;

/// A PostgreSQL row as a JSON object, by column type. Unsupported types are an error naming the
/// column, so that the operator can cast it in the query (`…::text`).
pub fn row_to_json(row: &tokio_postgres::Row) -> Result<Map<String, Value>, String> {
    let mut object = Map::with_capacity(row.len());
    for (i, column) in row.columns().iter().enumerate() {
        let value = column_to_json(row, i, column.type_()).map_err(|e| {
            format!(
                "column `{}` of type {}: {e}; cast it in the query (e.g. `{}::text`)",
                column.name(),
                column.type_(),
                column.name()
            )
        })?;
        object.insert(column.name().to_owned(), value);
    }
    Ok(object)
}

fn column_to_json(row: &tokio_postgres::Row, i: usize, ty: &Type) -> Result<Value, BoxError> {
    macro_rules! get {
        ($t:ty) => {
            row.try_get::<_, Option<$t>>(i)?
        };
    }
    Ok(match *ty {
        Type::BOOL => get!(bool).map_or(Value::Null, Value::Bool),
        Type::INT2 => get!(i16).map_or(Value::Null, Value::from),
        Type::INT4 => get!(i32).map_or(Value::Null, Value::from),
        Type::INT8 => get!(i64).map_or(Value::Null, Value::from),
        Type::OID => get!(u32).map_or(Value::Null, Value::from),
        Type::FLOAT4 => get!(f32).map_or(Value::Null, |v| float(f64::from(v))),
        Type::FLOAT8 => get!(f64).map_or(Value::Null, float),
        Type::NUMERIC => get!(Numeric).map_or(Value::Null, |n| n.0),
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN => {
            get!(String).map_or(Value::Null, Value::String)
        }
        Type::JSON | Type::JSONB => get!(Value).unwrap_or(Value::Null),
        Type::DATE => get!(Date).map_or(Value::Null, |d| Value::String(d.0)),
        Type::TIMESTAMP | Type::TIMESTAMPTZ => get!(std::time::SystemTime)
            .map_or(Value::Null, |t| {
                Value::String(humantime::format_rfc3339_millis(t).to_string())
            }),
        Type::UUID => get!(Uuid).map_or(Value::Null, |u| Value::String(u.0)),
        Type::TEXT_ARRAY | Type::VARCHAR_ARRAY => {
            get!(Vec<Option<String>>).map_or(Value::Null, |v| {
                Value::Array(
                    v.into_iter()
                        .map(|s| s.map_or(Value::Null, Value::String))
                        .collect(),
                )
            })
        }
        Type::INT4_ARRAY => get!(Vec<Option<i32>>).map_or(Value::Null, |v| {
            Value::Array(
                v.into_iter()
                    .map(|n| n.map_or(Value::Null, Value::from))
                    .collect(),
            )
        }),
        Type::INT8_ARRAY => get!(Vec<Option<i64>>).map_or(Value::Null, |v| {
            Value::Array(
                v.into_iter()
                    .map(|n| n.map_or(Value::Null, Value::from))
                    .collect(),
            )
        }),
        _ => return Err("unsupported type".into()),
    })
}

fn float(v: f64) -> Value {
    Number::from_f64(v).map_or(Value::Null, Value::Number)
}

/// NUMERIC, decoded from PostgreSQL's binary form (base-10000 digits) into a JSON number:
/// exact for integers that fit in 64 bits, the nearest double otherwise; NaN and infinities
/// become null.
struct Numeric(Value);

impl<'a> FromSql<'a> for Numeric {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, BoxError> {
        let word = |i: usize| -> Result<u16, BoxError> {
            raw.get(i * 2..i * 2 + 2)
                .map(|b| u16::from_be_bytes([b[0], b[1]]))
                .ok_or_else(|| "truncated numeric".into())
        };
        let ndigits = usize::from(word(0)?);
        let weight = i32::from(word(1)? as i16);
        let sign = word(2)?;
        let dscale = word(3)?;
        if sign == 0xC000 || sign == 0xD000 || sign == 0xF000 {
            return Ok(Numeric(Value::Null)); // NaN, +Inf, -Inf
        }
        let mut text = String::new();
        if sign == 0x4000 {
            text.push('-');
        }
        // Integer part: digit groups with weight >= 0.
        if weight < 0 {
            text.push('0');
        } else {
            for w in 0..=weight {
                let d = if (w as usize) < ndigits {
                    word(4 + w as usize)?
                } else {
                    0
                };
                if w == 0 {
                    text.push_str(&d.to_string());
                } else {
                    text.push_str(&format!("{d:04}"));
                }
            }
        }
        if dscale > 0 {
            text.push('.');
            let mut frac = String::new();
            let mut w = weight + 1;
            while frac.len() < usize::from(dscale) {
                let d = if w < 0 {
                    0
                } else if (w as usize) < ndigits {
                    word(4 + w as usize)?
                } else {
                    0
                };
                frac.push_str(&format!("{d:04}"));
                w += 1;
            }
            frac.truncate(usize::from(dscale));
            text.push_str(&frac);
        }
        let value = match text.parse::<i64>() {
            Ok(i) => Value::from(i),
            Err(_) => text.parse::<f64>().map_or(Value::Null, float),
        };
        Ok(Numeric(value))
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::NUMERIC
    }
}

/// DATE as `YYYY-MM-DD` (PostgreSQL sends days since 2000-01-01).
struct Date(String);

impl<'a> FromSql<'a> for Date {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, BoxError> {
        let days = i32::from_be_bytes(raw.try_into().map_err(|_| "bad date")?);
        if days == i32::MAX || days == i32::MIN {
            return Ok(Date(if days > 0 { "infinity" } else { "-infinity" }.into()));
        }
        // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
        let z = i64::from(days) + 10_957 + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        let year = yoe + era * 400 + i64::from(month <= 2);
        Ok(Date(format!("{year:04}-{month:02}-{day:02}")))
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::DATE
    }
}

/// UUID in its usual hyphenated form.
struct Uuid(String);

impl<'a> FromSql<'a> for Uuid {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, BoxError> {
        if raw.len() != 16 {
            return Err("bad uuid".into());
        }
        let digits = hex::encode(raw);
        Ok(Uuid(format!(
            "{}-{}-{}-{}-{}",
            &digits[0..8],
            &digits[8..12],
            &digits[12..16],
            &digits[16..20],
            &digits[20..32]
        )))
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::UUID
    }
}

/// A CSV cell as JSON: empty → null; `true`/`false` → booleans; numbers written plainly (no
/// leading zeros, so account numbers like `00123` stay text) → numbers; the rest text.
pub fn cell_to_json(cell: &str) -> Value {
    let cell = cell.trim();
    if cell.is_empty() {
        return Value::Null;
    }
    match cell {
        "true" | "TRUE" | "True" => return Value::Bool(true),
        "false" | "FALSE" | "False" => return Value::Bool(false),
        _ => {}
    }
    let digits = cell.strip_prefix('-').unwrap_or(cell);
    let plain = digits.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        && digits.bytes().filter(|&b| b == b'.').count() <= 1
        && !digits.starts_with('.')
        && !digits.ends_with('.')
        && !(digits.len() > 1 && digits.starts_with('0') && !digits.starts_with("0."));
    if plain {
        if let Ok(i) = cell.parse::<i64>() {
            return Value::from(i);
        }
        if let Ok(f) = cell.parse::<f64>() {
            return float(f);
        }
    }
    Value::String(cell.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells() {
        assert_eq!(cell_to_json(""), Value::Null);
        assert_eq!(cell_to_json("42"), Value::from(42));
        assert_eq!(cell_to_json("-1520.75"), serde_json::json!(-1520.75));
        assert_eq!(cell_to_json("0.5"), serde_json::json!(0.5));
        assert_eq!(cell_to_json("00123"), Value::from("00123"));
        assert_eq!(cell_to_json("1.2.3"), Value::from("1.2.3"));
        assert_eq!(cell_to_json("NET30"), Value::from("NET30"));
        assert_eq!(cell_to_json("true"), Value::Bool(true));
    }

    #[test]
    fn numerics_and_dates_decode() {
        // 1520.75: ndigits 2, weight 0, sign +, dscale 2, digits [1520, 7500].
        let raw = [0u8, 2, 0, 0, 0, 0, 0, 2, 0x05, 0xF0, 0x1D, 0x4C];
        assert_eq!(
            Numeric::from_sql(&Type::NUMERIC, &raw).expect("decodes").0,
            serde_json::json!(1520.75)
        );
        // -20000: ndigits 1, weight 1, sign -, dscale 0, digits [2].
        let raw = [0u8, 1, 0, 1, 0x40, 0, 0, 0, 0, 2];
        assert_eq!(
            Numeric::from_sql(&Type::NUMERIC, &raw).expect("decodes").0,
            Value::from(-20000)
        );
        // 0.05: ndigits 1, weight -1, dscale 2, digits [500].
        let raw = [0u8, 1, 0xFF, 0xFF, 0, 0, 0, 2, 0x01, 0xF4];
        assert_eq!(
            Numeric::from_sql(&Type::NUMERIC, &raw).expect("decodes").0,
            serde_json::json!(0.05)
        );
        let day = |d: i32| {
            Date::from_sql(&Type::DATE, &d.to_be_bytes())
                .expect("date")
                .0
        };
        assert_eq!(day(0), "2000-01-01");
        assert_eq!(day(9_830), "2026-11-30");
        assert_eq!(day(-1), "1999-12-31");
        assert!(Numeric::from_sql(&Type::NUMERIC, &[0, 1]).is_err());
    }
}
