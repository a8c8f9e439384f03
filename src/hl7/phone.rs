//! Phone numbers as international digits.

/// The phonenumber region of `default_country`: a calling code (`49`) or
/// an ISO 3166 region (`DE`).
pub(super) fn region(default_country: &str) -> Option<phonenumber::country::Id> {
    let d = default_country.trim().trim_start_matches('+');
    let id = if d.chars().all(|c| c.is_ascii_digit()) {
        let code: u16 = d.parse().ok()?;
        let db = &*phonenumber::metadata::DATABASE;
        let regions = db.by_code(&code)?;
        let main = regions
            .iter()
            .find(|m| m.is_main_country_for_code())
            .or(regions.first())?;
        main.id().to_owned()
    } else {
        d.to_ascii_uppercase()
    };
    id.parse().ok()
}

/// A phone number as international digits without `+` (E.164 digits), by
/// libphonenumber's rules (`phonenumber` crate) with `default_country` (a
/// calling code such as `49`, or a region such as `DE`) for national
/// numbers: `+49 151 …`, `+49 (0)151 …`, `0049 151…`, `0151 …` all become
/// `49151…`. Used for both sides of a match: PID-13 of ADT messages and
/// the phone numbers of messenger conversations (WhatsApp's `wa_id` is
/// international and is passed with a leading `+`). `None` for text that
/// is not a phone number (letters, too few or too many digits).
pub fn normalise_phone(text: &str, default_country: &str) -> Option<String> {
    let t = text.trim();
    if t.is_empty()
        || t.chars()
            .any(|c| !(c.is_ascii_digit() || " +-()/.".contains(c)))
    {
        return None;
    }
    let number = phonenumber::parse(region(default_country), t).ok()?;
    let e164 = number.format().mode(phonenumber::Mode::E164).to_string();
    let digits = e164.trim_start_matches('+');
    (7..=15).contains(&digits.len()).then(|| digits.to_owned())
}
