//! Streaming read of a Common Transfer File into the few values riskid derives rows from.
//!
//! Safe by construction for hostile input: the whole file must be UTF-8; a document type
//! declaration (and so any entity definition) is refused, never expanded; only the five
//! predefined entities and character references are resolved; nesting, text and pupil counts
//! are bounded. Names, dates of birth, addresses and contacts are skipped as they stream past:
//! their text is never kept.

use quick_xml::events::Event;
use quick_xml::reader::Reader;

/// Deepest nesting accepted (a real CTF nests about eight deep).
pub const MAX_DEPTH: usize = 24;
/// Longest text of one element: a year of attendance marks is about 1,500 characters.
pub const MAX_TEXT: usize = 16 * 1024;
/// Most records of one kind (YearData, SEN, FSM instances, languages, assessments, schools)
/// for one pupil: real files hold a handful. Bounds memory whatever the file holds.
pub const MAX_RECORDS: usize = 64;

/// A value from the file and the line its element starts on.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Loc {
    pub text: String,
    pub line: u64,
}

#[derive(Debug, Default)]
pub struct Header {
    pub version: Option<Loc>,
    pub lea: Option<Loc>,
    pub estab: Option<Loc>,
    pub urn: Option<Loc>,
    pub academic_year: Option<Loc>,
    /// When the file was exported (`Header/DateTime`).
    pub date_time: Option<Loc>,
}

#[derive(Debug, Default)]
pub struct Language {
    pub kind: Option<Loc>,
    pub code: Option<Loc>,
}

#[derive(Debug, Default)]
pub struct FsmInstance {
    pub start: Option<Loc>,
    pub end: Option<Loc>,
    pub line: u64,
}

#[derive(Debug, Default)]
pub struct SenRecord {
    pub start: Option<Loc>,
    pub provision: Option<Loc>,
    pub line: u64,
}

#[derive(Debug, Default)]
pub struct YearData {
    pub year: Option<Loc>,
    pub lea: Option<Loc>,
    pub estab: Option<Loc>,
    pub possible: Option<Loc>,
    pub authorised: Option<Loc>,
    pub unauthorised: Option<Loc>,
    pub start_date: Option<Loc>,
    pub marks: Option<Loc>,
    pub line: u64,
    /// 1-based position among the pupil's YearData elements, for element paths.
    pub index: usize,
}

#[derive(Debug, Default)]
pub struct Assessment {
    pub stage: Option<Loc>,
    pub year: Option<Loc>,
    pub subject: Option<Loc>,
    pub method: Option<Loc>,
    pub component: Option<Loc>,
    pub result: Option<Loc>,
    pub line: u64,
}

#[derive(Debug, Default)]
pub struct SchoolStay {
    pub entry: Option<Loc>,
    pub leaving: Option<Loc>,
    pub line: u64,
}

/// What riskid reads of one `Pupil`.
#[derive(Debug, Default)]
pub struct Pupil {
    /// 1-based position among the file's pupils.
    pub index: usize,
    pub line: u64,
    pub upn: Option<Loc>,
    /// `Sex` (newer files) or `Gender` (older), with which element it was.
    pub sex: Option<Loc>,
    pub sex_element: &'static str,
    pub ncyear: Option<Loc>,
    pub ethnicity: Option<Loc>,
    pub languages: Vec<Language>,
    pub in_care: Option<Loc>,
    pub fsm: Vec<FsmInstance>,
    pub sen: Vec<SenRecord>,
    pub years: Vec<YearData>,
    pub assessments: Vec<Assessment>,
    /// Whether a `SchoolHistory` element was present at all.
    pub has_school_history: bool,
    pub schools: Vec<SchoolStay>,
}

impl Pupil {
    /// The element path of this pupil, for messages: `CTfile/CTFpupilData/Pupil[3]`.
    pub fn path(&self) -> String {
        format!("CTfile/CTFpupilData/Pupil[{}]", self.index)
    }
}

#[derive(Debug, Default)]
pub struct Document {
    pub header: Header,
    pub pupils: Vec<Pupil>,
}

/// Why the file could not be read as XML at all.
#[derive(Debug, Clone, PartialEq)]
pub struct XmlError {
    pub line: u64,
    pub code: &'static str,
    pub message: String,
}

/// Reading stopped because the file holds more pupils than allowed.
#[derive(Debug)]
pub enum ReadError {
    Xml(XmlError),
    TooManyPupils,
}

impl From<XmlError> for ReadError {
    fn from(e: XmlError) -> Self {
        ReadError::Xml(e)
    }
}

pub mod code {
    pub const MALFORMED_XML: &str = "malformed_xml";
    pub const DTD_REFUSED: &str = "dtd_refused";
    pub const NOT_CTF: &str = "not_ctf";
    pub const TOO_DEEP: &str = "too_deep";
    pub const TEXT_TOO_LONG: &str = "text_too_long";
    pub const TOO_MANY_ELEMENTS: &str = "too_many_elements";
}

/// Line numbers from byte offsets, counted incrementally (the reader only moves forward).
struct Lines<'a> {
    bytes: &'a [u8],
    at: usize,
    line: u64,
}

impl Lines<'_> {
    fn line_at(&mut self, pos: usize) -> u64 {
        let pos = pos.min(self.bytes.len());
        if pos > self.at {
            self.line += memchr_count(&self.bytes[self.at..pos]);
            self.at = pos;
        }
        self.line
    }
}

fn memchr_count(b: &[u8]) -> u64 {
    b.iter().filter(|&&c| c == b'\n').count() as u64
}

fn err(line: u64, code: &'static str, message: impl Into<String>) -> XmlError {
    XmlError { line, code, message: message.into() }
}

/// Where a text value goes, decided when its element opens.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Slot {
    Skip,
    HVersion,
    HLea,
    HEstab,
    HUrn,
    HYear,
    HDateTime,
    Upn,
    Sex(&'static str),
    NcYear,
    Ethnicity,
    LangType,
    Lang,
    InCare,
    FsmStart,
    FsmEnd,
    SenStart,
    SenProvision,
    YdYear,
    YdLea,
    YdEstab,
    YdPossible,
    YdAuthorised,
    YdUnauthorised,
    YdStart,
    YdMarks,
    KsStage,
    AsYear,
    AsSubject,
    AsMethod,
    AsComponent,
    AsResult,
    ShEntry,
    ShLeaving,
}

/// The slot for an element, from the names of its ancestors below the root (`path`, without
/// the element itself) and its own name.
fn slot(path: &[&str], name: &str) -> Slot {
    use Slot::*;
    match (path, name) {
        (["Header"], "CTFversion") => HVersion,
        (["Header", "SourceSchool"], "LEA") => HLea,
        (["Header", "SourceSchool"], "Estab") => HEstab,
        (["Header", "SourceSchool"], "URN") => HUrn,
        (["Header", "SourceSchool"], "AcademicYear") => HYear,
        (["Header"], "DateTime") => HDateTime,
        (["CTFpupilData", "Pupil"], "UPN") => Upn,
        (["CTFpupilData", "Pupil"] | ["CTFpupilData", "Pupil", "BasicDetails"], "Sex") => Sex("Sex"),
        (["CTFpupilData", "Pupil"] | ["CTFpupilData", "Pupil", "BasicDetails"], "Gender") => Sex("Gender"),
        (["CTFpupilData", "Pupil"] | ["CTFpupilData", "Pupil", "BasicDetails"], "NCyearActual") => NcYear,
        (["CTFpupilData", "Pupil"] | ["CTFpupilData", "Pupil", "BasicDetails"], "Ethnicity") => Ethnicity,
        (["CTFpupilData", "Pupil", "BasicDetails", "Languages", "Type"], "LanguageType") => LangType,
        (["CTFpupilData", "Pupil", "BasicDetails", "Languages", "Type"], "Language") => Lang,
        (["CTFpupilData", "Pupil", "LookedAfter"], "InCare") => InCare,
        (["CTFpupilData", "Pupil", "FSMhistory", "FSMinstance"], "FSMstartDate") => FsmStart,
        (["CTFpupilData", "Pupil", "FSMhistory", "FSMinstance"], "FSMendDate") => FsmEnd,
        (["CTFpupilData", "Pupil", "SENhistory", "SEN"], "StartDate") => SenStart,
        (["CTFpupilData", "Pupil", "SENhistory", "SEN"], "SENprovision") => SenProvision,
        (["CTFpupilData", "Pupil", "Attendance", "YearData"], "Year") => YdYear,
        (["CTFpupilData", "Pupil", "Attendance", "YearData"], "LEA") => YdLea,
        (["CTFpupilData", "Pupil", "Attendance", "YearData"], "Estab") => YdEstab,
        (["CTFpupilData", "Pupil", "Attendance", "YearData"], "SessionsPossible") => YdPossible,
        (["CTFpupilData", "Pupil", "Attendance", "YearData"], "SessionsAuthorised") => YdAuthorised,
        (["CTFpupilData", "Pupil", "Attendance", "YearData"], "SessionsUnauthorised") => YdUnauthorised,
        (
            ["CTFpupilData", "Pupil", "Attendance", "YearData", "AttendSessions"],
            "AttendanceStartDate" | "StartDate",
        ) => YdStart,
        (["CTFpupilData", "Pupil", "Attendance", "YearData", "AttendSessions"], "AttendanceMarks" | "Marks") => YdMarks,
        (["CTFpupilData", "Pupil", "StageAssessments", "KeyStage"], "Stage") => KsStage,
        (["CTFpupilData", "Pupil", "StageAssessments", "KeyStage", "StageAssessment" | "Assessment"], n) => match n {
            "Year" => AsYear,
            "Subject" => AsSubject,
            "Method" => AsMethod,
            "Component" => AsComponent,
            "Result" => AsResult,
            _ => Skip,
        },
        (["CTFpupilData", "Pupil", "SchoolHistory", "School"], "EntryDate") => ShEntry,
        (["CTFpupilData", "Pupil", "SchoolHistory", "School"], "LeavingDate") => ShLeaving,
        _ => Skip,
    }
}

/// Reads a CTF. `max_pupils` bounds the work before any pupil is derived.
pub fn read(bytes: &[u8], max_pupils: usize) -> Result<Document, ReadError> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let text = match std::str::from_utf8(bytes) {
        Ok(t) => t,
        Err(e) => {
            let line = 1 + memchr_count(&bytes[..e.valid_up_to()]);
            return Err(err(
                line,
                crate::ingest::code::INVALID_UTF8,
                "the file is not valid UTF-8 (a CTF is UTF-8 XML)",
            )
            .into());
        }
    };
    let mut reader = Reader::from_str(text);
    let cfg = reader.config_mut();
    cfg.check_end_names = true;
    cfg.expand_empty_elements = true;
    cfg.trim_text(true);
    let mut lines = Lines { bytes, at: 0, line: 1 };
    let mut doc = Document::default();
    // Element names below the root (only those riskid reads; others are "*").
    let mut names: Vec<&'static str> = Vec::with_capacity(MAX_DEPTH);
    let mut root_seen = false;
    let mut root_closed = false;
    let mut slot_now = Slot::Skip;
    let mut buf = String::new();
    let mut buf_line = 0u64;
    let mut pupil: Option<Pupil> = None;
    loop {
        let start = reader.buffer_position() as usize;
        let event = reader.read_event().map_err(|e| {
            let line = lines.line_at(reader.error_position() as usize);
            err(line, code::MALFORMED_XML, format!("the file is not well-formed XML: {}", xml_message(&e)))
        })?;
        // The line where this event's markup begins (skip leading whitespace).
        let line = lines.line_at(start + leading_ws(&bytes[start.min(bytes.len())..]));
        match event {
            Event::DocType(_) => {
                return Err(err(
                    line,
                    code::DTD_REFUSED,
                    "the file has a document type declaration (<!DOCTYPE>): a CTF needs none, and riskid refuses \
                     them so that no entity can be defined or expanded",
                )
                .into());
            }
            Event::Start(e) => {
                if root_closed {
                    return Err(err(line, code::MALFORMED_XML, "content after the closing </CTfile>").into());
                }
                let full = local(e.name().0);
                let name = intern(full);
                if !root_seen {
                    if name != "CTfile" {
                        return Err(err(
                            line,
                            code::NOT_CTF,
                            format!(
                                "the root element is <{}>, not <CTfile>: this is not a Common Transfer File",
                                short(full)
                            ),
                        )
                        .into());
                    }
                    root_seen = true;
                    continue;
                }
                if names.len() + 1 >= MAX_DEPTH {
                    return Err(err(
                        line,
                        code::TOO_DEEP,
                        format!("elements are nested more than {MAX_DEPTH} deep; a CTF nests about eight"),
                    )
                    .into());
                }
                open(&names, name, line, &mut doc, &mut pupil, max_pupils)?;
                slot_now = slot(&names, name);
                buf.clear();
                buf_line = line;
                names.push(name);
            }
            Event::End(_) => {
                let Some(name) = names.pop() else {
                    root_closed = true; // </CTfile>
                    continue;
                };
                if slot_now != Slot::Skip {
                    let value = Loc { text: std::mem::take(&mut buf), line: buf_line };
                    store(slot_now, value, &mut doc, pupil.as_mut());
                    slot_now = Slot::Skip;
                }
                if names.as_slice() == ["CTFpupilData"]
                    && name == "Pupil"
                    && let Some(p) = pupil.take()
                {
                    doc.pupils.push(p);
                }
            }
            Event::Text(t) => {
                if slot_now != Slot::Skip {
                    push_text(&mut buf, &t.xml10_content(), line)?;
                }
            }
            Event::CData(t) => {
                if slot_now != Slot::Skip {
                    let raw = t.into_inner();
                    push_text(&mut buf, &raw, line)?;
                }
            }
            Event::GeneralRef(r) => {
                let ch = match r.resolve_char_ref() {
                    Ok(Some(c)) => c,
                    Ok(None) => match &*r {
                        "lt" => '<',
                        "gt" => '>',
                        "amp" => '&',
                        "apos" => '\'',
                        "quot" => '"',
                        // The name is not quoted: it may sit inside a pupil's name.
                        _ => {
                            return Err(err(
                                line,
                                code::MALFORMED_XML,
                                "an entity reference that is not defined: only the five XML entities (&amp; &lt; \
                                 &gt; &apos; &quot;) and character references are accepted",
                            )
                            .into());
                        }
                    },
                    Err(_) => return Err(err(line, code::MALFORMED_XML, "an invalid character reference").into()),
                };
                if slot_now != Slot::Skip {
                    let mut tmp = [0u8; 4];
                    push_text(&mut buf, ch.encode_utf8(&mut tmp), line)?;
                }
            }
            Event::Empty(_) => {} // expanded into Start + End
            Event::Decl(d) => {
                if let Some(Ok(enc)) = d.encoding() {
                    let enc = enc.to_ascii_lowercase();
                    if enc != "utf-8" && enc != "utf8" {
                        return Err(err(
                            line,
                            code::MALFORMED_XML,
                            format!("the file declares encoding {:?}; riskid reads CTF as UTF-8 only", short(&enc)),
                        )
                        .into());
                    }
                }
            }
            Event::Comment(_) | Event::PI(_) => {}
            Event::Eof => {
                if root_seen && !root_closed {
                    let line = lines.line_at(bytes.len());
                    return Err(err(
                        line,
                        code::MALFORMED_XML,
                        "the file ends before its elements are closed (it may be cut short)",
                    )
                    .into());
                }
                break;
            }
        }
    }
    if !root_seen {
        return Err(
            err(1, code::NOT_CTF, "the file has no <CTfile> element: this is not a Common Transfer File").into()
        );
    }
    Ok(doc)
}

/// The element names riskid reads, as static strings; any other is "*".
fn intern(name: &str) -> &'static str {
    const NAMES: &[&str] = &[
        "CTfile",
        "Header",
        "CTFversion",
        "SourceSchool",
        "LEA",
        "Estab",
        "URN",
        "AcademicYear",
        "DateTime",
        "CTFpupilData",
        "Pupil",
        "UPN",
        "Sex",
        "Gender",
        "BasicDetails",
        "NCyearActual",
        "Ethnicity",
        "Languages",
        "Type",
        "LanguageType",
        "Language",
        "LookedAfter",
        "InCare",
        "FSMhistory",
        "FSMinstance",
        "FSMstartDate",
        "FSMendDate",
        "SENhistory",
        "SEN",
        "StartDate",
        "SENprovision",
        "Attendance",
        "YearData",
        "Year",
        "SessionsPossible",
        "SessionsAuthorised",
        "SessionsUnauthorised",
        "AttendSessions",
        "AttendanceStartDate",
        "AttendanceMarks",
        "Marks",
        "StageAssessments",
        "KeyStage",
        "Stage",
        "StageAssessment",
        "Assessment",
        "Subject",
        "Method",
        "Component",
        "Result",
        "SchoolHistory",
        "School",
        "EntryDate",
        "LeavingDate",
    ];
    NAMES.iter().copied().find(|n| *n == name).unwrap_or("*")
}

fn leading_ws(b: &[u8]) -> usize {
    b.iter().take_while(|c| c.is_ascii_whitespace()).count()
}

fn local(name: &str) -> &str {
    name.rsplit_once(':').map_or(name, |(_, l)| l)
}

fn short(v: &str) -> String {
    crate::ingest::report::short(v).into_owned()
}

fn xml_message(e: &quick_xml::Error) -> String {
    // quick-xml's messages name tags, never our values; keep them short.
    let m = e.to_string();
    crate::ingest::report::short(&m).into_owned()
}

fn push_text(buf: &mut String, s: &str, line: u64) -> Result<(), XmlError> {
    if buf.len() + s.len() > MAX_TEXT {
        return Err(err(line, code::TEXT_TOO_LONG, format!("an element's text is longer than {MAX_TEXT} bytes")));
    }
    buf.push_str(s);
    Ok(())
}

/// An element opens: start the records that repeat.
fn open(
    path: &[&str],
    name: &str,
    line: u64,
    doc: &mut Document,
    pupil: &mut Option<Pupil>,
    max_pupils: usize,
) -> Result<(), ReadError> {
    match (path, name) {
        (["CTFpupilData"], "Pupil") => {
            if doc.pupils.len() >= max_pupils {
                return Err(ReadError::TooManyPupils);
            }
            *pupil = Some(Pupil { index: doc.pupils.len() + 1, line, sex_element: "Sex", ..Pupil::default() });
        }
        _ => {
            let Some(p) = pupil.as_mut() else { return Ok(()) };
            let full = |n: usize, what: &str| -> Result<(), ReadError> {
                if n >= MAX_RECORDS {
                    return Err(err(
                        line,
                        code::TOO_MANY_ELEMENTS,
                        format!(
                            "pupil {} has more than {MAX_RECORDS} {what} elements; a real CTF holds a handful",
                            p.index
                        ),
                    )
                    .into());
                }
                Ok(())
            };
            match (path, name) {
                (["CTFpupilData", "Pupil", "BasicDetails", "Languages"], "Type") => {
                    full(p.languages.len(), "Languages/Type")?
                }
                (["CTFpupilData", "Pupil", "FSMhistory"], "FSMinstance") => full(p.fsm.len(), "FSMinstance")?,
                (["CTFpupilData", "Pupil", "SENhistory"], "SEN") => full(p.sen.len(), "SEN")?,
                (["CTFpupilData", "Pupil", "Attendance"], "YearData") => full(p.years.len(), "YearData")?,
                (["CTFpupilData", "Pupil", "StageAssessments"], "KeyStage")
                | (["CTFpupilData", "Pupil", "StageAssessments", "KeyStage"], "StageAssessment" | "Assessment") => {
                    full(p.assessments.len(), "KeyStage and StageAssessment")?
                }
                (["CTFpupilData", "Pupil", "SchoolHistory"], "School") => {
                    full(p.schools.len(), "SchoolHistory/School")?
                }
                _ => {}
            }
            match (path, name) {
                (["CTFpupilData", "Pupil", "BasicDetails", "Languages"], "Type") => {
                    p.languages.push(Language::default())
                }
                (["CTFpupilData", "Pupil", "FSMhistory"], "FSMinstance") => {
                    p.fsm.push(FsmInstance { line, ..Default::default() })
                }
                (["CTFpupilData", "Pupil", "SENhistory"], "SEN") => {
                    p.sen.push(SenRecord { line, ..Default::default() })
                }
                (["CTFpupilData", "Pupil", "Attendance"], "YearData") => {
                    let index = p.years.len() + 1;
                    p.years.push(YearData { line, index, ..Default::default() })
                }
                (["CTFpupilData", "Pupil", "StageAssessments"], "KeyStage") => {
                    // The stage is filled in when its <Stage> arrives; assessments copy it.
                    p.assessments.push(Assessment { line, ..Default::default() });
                }
                (["CTFpupilData", "Pupil", "StageAssessments", "KeyStage"], "StageAssessment" | "Assessment") => {
                    // The stage is not used for deriving rows: it is not copied.
                    p.assessments.push(Assessment { line, ..Default::default() });
                }
                (["CTFpupilData", "Pupil"], "SchoolHistory") => p.has_school_history = true,
                (["CTFpupilData", "Pupil", "SchoolHistory"], "School") => {
                    p.schools.push(SchoolStay { line, ..Default::default() })
                }
                _ => {}
            }
        }
    }
    Ok(())
}

fn store(slot: Slot, v: Loc, doc: &mut Document, pupil: Option<&mut Pupil>) {
    use Slot::*;
    let h = &mut doc.header;
    match slot {
        Skip => return,
        HVersion => return h.version = Some(v),
        HLea => return h.lea = Some(v),
        HEstab => return h.estab = Some(v),
        HUrn => return h.urn = Some(v),
        HYear => return h.academic_year = Some(v),
        HDateTime => return h.date_time = Some(v),
        _ => {}
    }
    let Some(p) = pupil else { return };
    match slot {
        Upn => p.upn = Some(v),
        Sex(el) => {
            p.sex = Some(v);
            p.sex_element = el;
        }
        NcYear => p.ncyear = Some(v),
        Ethnicity => p.ethnicity = Some(v),
        LangType => {
            if let Some(l) = p.languages.last_mut() {
                l.kind = Some(v)
            }
        }
        Lang => {
            if let Some(l) = p.languages.last_mut() {
                l.code = Some(v)
            }
        }
        InCare => p.in_care = Some(v),
        FsmStart | FsmEnd => {
            if let Some(f) = p.fsm.last_mut() {
                if slot == FsmStart { f.start = Some(v) } else { f.end = Some(v) }
            }
        }
        SenStart | SenProvision => {
            if let Some(s) = p.sen.last_mut() {
                if slot == SenStart { s.start = Some(v) } else { s.provision = Some(v) }
            }
        }
        YdYear | YdLea | YdEstab | YdPossible | YdAuthorised | YdUnauthorised | YdStart | YdMarks => {
            if let Some(y) = p.years.last_mut() {
                let field = match slot {
                    YdYear => &mut y.year,
                    YdLea => &mut y.lea,
                    YdEstab => &mut y.estab,
                    YdPossible => &mut y.possible,
                    YdAuthorised => &mut y.authorised,
                    YdUnauthorised => &mut y.unauthorised,
                    YdStart => &mut y.start_date,
                    _ => &mut y.marks,
                };
                *field = Some(v);
            }
        }
        KsStage => {
            if let Some(a) = p.assessments.last_mut() {
                a.stage = Some(v)
            }
        }
        AsYear | AsSubject | AsMethod | AsComponent | AsResult => {
            if let Some(a) = p.assessments.last_mut() {
                let field = match slot {
                    AsYear => &mut a.year,
                    AsSubject => &mut a.subject,
                    AsMethod => &mut a.method,
                    AsComponent => &mut a.component,
                    _ => &mut a.result,
                };
                *field = Some(v);
            }
        }
        ShEntry | ShLeaving => {
            if let Some(s) = p.schools.last_mut() {
                if slot == ShEntry { s.entry = Some(v) } else { s.leaving = Some(v) }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_ok(x: &str) -> Document {
        read(x.as_bytes(), 100).unwrap()
    }

    fn read_err(x: &[u8]) -> XmlError {
        match read(x, 100) {
            Err(ReadError::Xml(e)) => e,
            other => panic!("expected an XML error, got {other:?}"),
        }
    }

    #[test]
    fn reads_values_with_their_lines_and_skips_names() {
        let d = read_ok(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<CTfile>\n<Header><CTFversion>25.0</CTFversion>\
             <SourceSchool><LEA>359</LEA><Estab>2001</Estab><URN>100001</URN></SourceSchool></Header>\n\
             <CTFpupilData>\n<Pupil>\n<UPN>B801200005001</UPN>\n<Surname>Secret</Surname>\
             <BasicDetails><NCyearActual>5</NCyearActual><Languages><Type><LanguageType>F</LanguageType>\
             <Language>ENG</Language></Type></Languages></BasicDetails>\n\
             <Attendance><YearData><Year>2025</Year><AttendSessions><AttendanceStartDate>2025-09-01</AttendanceStartDate>\
             <AttendanceMarks>//#</AttendanceMarks></AttendSessions></YearData></Attendance>\n\
             </Pupil>\n</CTFpupilData>\n</CTfile>\n",
        );
        assert_eq!(d.header.version.as_ref().unwrap().text, "25.0");
        assert_eq!(d.header.urn.as_ref().unwrap().text, "100001");
        let p = &d.pupils[0];
        assert_eq!(p.line, 5);
        assert_eq!(p.upn.as_ref().unwrap(), &Loc { text: "B801200005001".into(), line: 6 });
        assert_eq!(p.ncyear.as_ref().unwrap().text, "5");
        assert_eq!(p.languages[0].code.as_ref().unwrap().text, "ENG");
        assert_eq!(p.years[0].marks.as_ref().unwrap().text, "//#");
        assert_eq!(p.years[0].marks.as_ref().unwrap().line, 8);
        assert!(format!("{d:?}").find("Secret").is_none(), "names are never kept");
    }

    #[test]
    fn refuses_dtds_entities_depth_and_bad_utf8() {
        let bomb = "<?xml version=\"1.0\"?><!DOCTYPE lolz [<!ENTITY lol \"lol\"><!ENTITY lol2 \"&lol;&lol;\">]>\
                    <CTfile><Header/></CTfile>";
        assert_eq!(read_err(bomb.as_bytes()).code, code::DTD_REFUSED);
        let undefined = "<CTfile><Header><CTFversion>&lol;</CTFversion></Header></CTfile>";
        assert_eq!(read_err(undefined.as_bytes()).code, code::MALFORMED_XML);
        let deep = format!("<CTfile>{}{}</CTfile>", "<a>".repeat(100), "</a>".repeat(100));
        assert_eq!(read_err(deep.as_bytes()).code, code::TOO_DEEP);
        assert_eq!(read_err(b"<CTfile>\n<Header>\xff</Header></CTfile>").line, 2);
        assert_eq!(read_err(b"<html></html>").code, code::NOT_CTF);
        assert_eq!(read_err(b"<CTfile><Header></CTfile>").code, code::MALFORMED_XML);
        assert_eq!(read_err(b"").code, code::NOT_CTF);
        let long = format!("<CTfile><Header><CTFversion>{}</CTFversion></Header></CTfile>", "9".repeat(MAX_TEXT + 1));
        assert_eq!(read_err(long.as_bytes()).code, code::TEXT_TOO_LONG);
    }

    #[test]
    fn resolves_predefined_entities_and_character_references() {
        let d = read_ok("<CTfile><Header><CTFversion>2&#53;.&amp;0</CTFversion></Header></CTfile>");
        assert_eq!(d.header.version.unwrap().text, "25.&0");
    }

    #[test]
    fn stops_at_the_pupil_limit() {
        let x = format!("<CTfile><CTFpupilData>{}</CTFpupilData></CTfile>", "<Pupil></Pupil>".repeat(5));
        assert!(matches!(read(x.as_bytes(), 4), Err(ReadError::TooManyPupils)));
        assert_eq!(read(x.as_bytes(), 5).unwrap().pupils.len(), 5);
    }
}
