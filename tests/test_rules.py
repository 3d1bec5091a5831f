"""decide() and the rule files: every field and test, combinations, defaults, and file:line errors."""

import textwrap
import time
from pathlib import Path

import pytest

from listmod.message import parse
from listmod.rules import Context, decide, load_rules
from listmod.tomlfile import ConfigError

MEMBER = Context("dev@example.org", "dev.example.org", sender_is_member=True)
STRANGER = Context("dev@example.org", "dev.example.org", sender_is_member=False)


def rules(tmp_path: Path, text: str, name: str = "10-test.toml"):
    d = tmp_path / "rules"
    d.mkdir(exist_ok=True)
    (d / name).write_text(textwrap.dedent(text))
    return load_rules(d)


def one_rule(tmp_path, match: str, action: str = "hold"):
    return rules(tmp_path, f"""
        [[rule]]
        id = "r"
        action = "{action}"
        reason = "matched: {{matched}}"
        {match}
        """)


def msg(subject="hello", body="Plain text.", sender="alice@example.org", extra="", to="dev@example.org"):
    return parse((f"From: Alice <{sender}>\r\nTo: {to}\r\nSubject: {subject}\r\nMessage-ID: <x@y>\r\n"
                  f"{extra}\r\n{body}\r\n").encode(), sender)


ATTACHED = parse(
    b"From: alice@example.org\r\nSubject: files\r\nMIME-Version: 1.0\r\n"
    b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nSee attached.\r\n"
    b"--b\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment; filename=\"Report.PDF\"\r\n"
    b"Content-Transfer-Encoding: base64\r\n\r\n" + b"QUFB" * 1000 + b"\r\n--b--\r\n", "alice@example.org")


@pytest.mark.parametrize("match, post, hit", [
    ('match.subject.contains = "URGENT"', msg(subject="this is urgent!"), True),
    ('match.subject.contains = "URGENT"\nmatch.subject.case_sensitive = true', msg(subject="urgent"), False),
    ('match.body.words = ["idiot", "moron"]', msg(body="What an Idiot."), True),
    ('match.body.words = ["idiot"]', msg(body="idiotic idea"), False),
    ('match.body.regex = "\\\\bv\\\\d+\\\\.\\\\d+"', msg(body="upgrade to v2.13 now"), True),
    ('match.from.equals = "alice@example.org"', msg(), True),
    ('match.from.ends_with = "@example.com"', msg(), False),
    ('match.subject.starts_with = ["Re:", "Fwd:"]', msg(subject="Fwd: look"), True),
    ('match.sender.ends_with = "@example.org"', msg(), True),
    ('match.header."X-Mailer".contains = "bulk"', msg(extra="X-Mailer: BulkSender 3\r\n"), True),
    ('match.header."X-Mailer".contains = "bulk"', msg(), False),
    ('match.size.gt = "1KB"', msg(body="x" * 2000), True),
    ('match.size.le = 100', msg(), False),
    ('match.recipients.ge = 3', msg(to="a@x.org, b@x.org, c@x.org"), True),
    ('match.links.gt = 1', msg(body="http://a.example https://b.example www.c.example"), True),
    ('match.links.eq = 0', msg(), True),
    ('match.attachments.eq = 1', ATTACHED, True),
    ('match.attachment_size.gt = "2KB"', ATTACHED, True),
    ('match.attachment_types.equals = "application/pdf"', ATTACHED, True),
    ('match.attachment_names.ends_with = ".pdf"', ATTACHED, True),
    ('match.any = [{ subject.contains = "nope" }, { body.contains = "plain" }]', msg(), True),
    ('match.any = [{ subject.contains = "nope" }, { body.contains = "nada" }]', msg(), False),
    ('match.not = { from.ends_with = "@example.org" }', msg(), False),
    ('match.not = { from.ends_with = "@example.com" }', msg(), True),
    ('match.subject.contains = "hello"\nmatch.body.contains = "missing"', msg(), False),
])
def test_each_field_and_test_matches_what_it_says(tmp_path, match, post, hit):
    decision = decide(post, MEMBER, one_rule(tmp_path, match))
    assert (decision.rule_id == "r") is hit, decision
    if hit:
        assert decision.reason.startswith("matched: ") and len(decision.reason) > len("matched: ")


def test_sender_member_and_moderator_fields_read_the_context(tmp_path):
    rs = one_rule(tmp_path, "match.sender.member = false")
    assert decide(msg(), STRANGER, rs).rule_id == "r"
    assert decide(msg(), MEMBER, rs).rule_id == "default-member"
    moderator = Context("dev@example.org", "dev.example.org", True, sender_is_moderator=True)
    rs2 = rules(tmp_path, '[[rule]]\nid = "m"\naction = "accept"\nreason = "moderators"\n'
                'match.sender.moderator = true\n', name="20-more.toml")
    assert decide(msg(), moderator, rs2).rule_id == "m"


def test_first_terminal_match_decides_and_the_trace_shows_every_rule_considered(tmp_path):
    rs = rules(tmp_path, """
        [[rule]]
        id = "first"
        action = "hold"
        reason = "first"
        match.subject.contains = "no such thing"

        [[rule]]
        id = "second"
        action = "reject"
        reason = "second"
        match.body.contains = "plain"

        [[rule]]
        id = "third"
        action = "discard"
        reason = "third"
        match.body.contains = "plain"
        """)
    d = decide(msg(), MEMBER, rs)
    assert (d.action, d.rule_id, d.source, d.actor) == ("reject", "second", "rules/10-test.toml:8", "rules")
    assert [(t.rule_id, t.matched) for t in d.trace] == [("first", False), ("second", True)]
    assert d.evidence == "body contains 'plain'"


def test_without_a_match_the_list_default_decides_with_its_own_reason(tmp_path):
    rs = one_rule(tmp_path, 'match.subject.contains = "never"')
    member = decide(msg(), MEMBER, rs)
    stranger = decide(msg(), STRANGER, rs)
    assert (member.action, member.actor, member.source) == ("accept", "default", "default")
    assert (stranger.action, stranger.rule_id) == ("hold", "default-nonmember")
    assert "not a member of dev@example.org" in stranger.reason
    strict = Context("dev@example.org", "dev.example.org", False, default_nonmember_action="reject")
    assert decide(msg(), strict, rs).reason == ("Only members may post to dev@example.org; to join, send \"subscribe\" to "
                                                  "dev-request@example.org.")


def test_reason_templates_are_filled_in(tmp_path):
    rs = rules(tmp_path, """
        [[rule]]
        id = "t"
        action = "hold"
        reason = "{sender} wrote '{subject}' to {list} ({matched}); {unknown} stays"
        match.subject.contains = "hello"
        """)
    assert decide(msg(), MEMBER, rs).reason == (
        "alice@example.org wrote 'hello' to dev@example.org (subject contains 'hello'); {unknown} stays")


def test_rules_for_other_lists_are_skipped(tmp_path):
    rs = rules(tmp_path, """
        lists = ["other@example.org"]
        [[rule]]
        id = "elsewhere"
        action = "reject"
        reason = "x"
        match.body.contains = "plain"
        """)
    assert decide(msg(), MEMBER, rs).rule_id == "default-member"


def test_a_catastrophic_regex_holds_the_post_within_its_time_limit(tmp_path):
    rs = one_rule(tmp_path, 'match.body.regex = "(a+)+$"', action="accept")
    started = time.monotonic()
    d = decide(msg(body="a" * 50000 + "!"), MEMBER, rs)
    assert time.monotonic() - started < 1.0
    assert d.action == "hold"
    assert d.reason.startswith("The post took too long to judge: rule r could not be evaluated in time")


def test_the_starter_rules_load_and_make_sense(tmp_path):
    rs = load_rules(Path(__file__).resolve().parent.parent / "rules")
    assert len(rs.rules) >= 6
    assert decide(msg(subject=""), MEMBER, rs).rule_id == "empty-subject"
    assert decide(msg(to=", ".join(f"p{i}@x.org" for i in range(12))), MEMBER, rs).rule_id == "many-recipients"
    gtube = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
    assert decide(msg(body=gtube), MEMBER, rs).action == "discard"
    assert decide(msg(), MEMBER, rs).action == "accept"


# --- errors: each names file:line and says what was expected ---

@pytest.mark.parametrize("text, line, words", [
    ('[[rule]]\nid = "a"\nacton = "hold"\nreason = "r"\n', 3, "'acton' is not a rule key (did you mean 'action'?)"),
    ('[[rule]]\nid = "a"\naction = "hold"\n', 1, "the rule has no reason"),
    ('[[rule]]\nid = "a"\naction = "block"\nreason = "r"\n', 3, "'block' is not an action"),
    ('[[rule]]\nid = "a"\naction = "hold"\nreason = "r"\nmatch.subjet.contains = "x"\n', 5,
     "'subjet' is not a field (did you mean 'subject'?)"),
    ('[[rule]]\nid = "a"\naction = "hold"\nreason = "r"\nmatch.body.regex = "(unclosed"\n', 5,
     "does not compile"),
    ('[[rule]]\nid = "a"\naction = "hold"\nreason = "r"\nmatch.size.gt = "big"\n', 5, "is not a size"),
    ('[[rule]]\nid = "a"\naction = "hold"\nreason = "r"\nmatch.body.contain = "x"\n', 5,
     "'contain' is not a test for body (did you mean 'contains'?)"),
    ('[[rule]]\nid = "a"\naction = "hold"\nreason = "r"\n\n[[rule]]\nid = "a"\naction = "hold"\nreason = "r"\n',
     7, "rule id 'a' is already used at rules/10-test.toml:1"),
    ('[[rule]]\nid = "a"\naction = "hold"\nreason = "r\n', 4, "TOML syntax error"),
])
def test_rule_file_errors_name_file_and_line(tmp_path, text, line, words):
    with pytest.raises(ConfigError) as err:
        rules(tmp_path, text)
    assert str(err.value).startswith(f"rules/10-test.toml:{line}: "), str(err.value)
    assert words in str(err.value)


def test_every_error_in_a_directory_is_reported_at_once(tmp_path):
    d = tmp_path / "rules"
    d.mkdir()
    (d / "a.toml").write_text('[[rule]]\nid = "a"\naction = "hold"\n')
    (d / "b.toml").write_text('[[rule]]\nid = "b"\naction = "nope"\nreason = "r"\n')
    with pytest.raises(ConfigError) as err:
        load_rules(d)
    assert [p.split(":")[0] for p in err.value.problems] == ["rules/a.toml", "rules/b.toml"]


# --- the rest of the language: context fields, exemptions, escalate and tag, word files ---

def ctx(**kw):
    base = dict(list_address="dev@example.org", list_id="dev.example.org", sender_is_member=True)
    return Context(**{**base, **kw})


@pytest.mark.parametrize("match, context, hit", [
    ('match.sender.trust = "trusted"', ctx(sender_trust="trusted"), True),
    ('match.sender.trust = "trusted"', ctx(), False),
    ('match.sender.trust.equals = ["new", "basic"]', ctx(), True),        # a stranger is new
    ('match.sender.sanction = "warning"', ctx(sender_sanction="warning"), True),
    ('match.sender.sanction = "none"', ctx(), True),
    ('match.sender.approved_posts.lt = 3', ctx(approved_posts=2), True),
    ('match.sender.approved_posts.lt = 3', ctx(approved_posts=3), False),
    ('match.sender.posts_last_hour.gt = 10', ctx(posts_last_hour=11), True),
    ('match.thread.posts_last_hour.ge = 25', ctx(thread_posts_last_hour=25), True),
    ('match.thread.participants.gt = 5', ctx(thread_participants=4), False),
    ('match.auth.dkim.equals = "pass"', ctx(auth=(("dkim", "fail"), ("dkim", "pass"))), True),
    ('match.auth.spf.equals = "pass"', ctx(auth=(("dkim", "pass"),)), False),
    ('match.auth.dmarc.equals = "none"', ctx(), True),  # no trusted result: "none"
    ('match.spam.score.ge = 5.5', ctx(spam_score=7.2), True),
    ('match.spam.score.ge = 5', ctx(spam_score=4.9), False),
    ('match.spam.score.lt = 100', ctx(), False),  # no score: no test holds
])
def test_context_fields_read_what_the_store_and_the_mta_said(tmp_path, match, context, hit):
    assert (decide(msg(), context, one_rule(tmp_path, match, action="reject")).rule_id == "r") is hit


@pytest.mark.parametrize("match, post, hit", [
    ('match.attachment_names.glob = "*.pdf"', ATTACHED, True),        # Report.PDF: globs ignore case
    ('match.attachment_names.glob = "*.pdf"\nmatch.attachment_names.case_sensitive = true', ATTACHED, False),
    ('match.attachment_types.glob = "application/*"', ATTACHED, True),
    ('match.subject.glob = "[[]ann*"', msg(subject="[ANN] release"), True),
    ('match.body.contains = ["nothing", "PLAIN TEXT"]', msg(), True),
    ('match.body.words = ["plain text"]', msg(body="This is plain text."), True),
    ('match.body.words = ["plain tex"]', msg(body="This is plain text."), False),
    ('match.body.regex = "colou?r"', msg(body="Favourite COLOR"), True),
    ('match.body.regex = "(?:free|cheap)\\\\s+pills"', msg(body="cheap   pills here"), True),
    ('match.body.regex = "(?:free|cheap)\\\\s+pills"', msg(body="cheap-pills"), False),
    ('match.sender.member = true\nmatch.body.contains = "plain"', msg(), True),
])
def test_text_tests_with_the_prefilter_agree_with_plain_matching(tmp_path, match, post, hit):
    assert (decide(post, MEMBER, one_rule(tmp_path, match)).rule_id == "r") is hit


def test_words_file_is_read_beside_the_rules(tmp_path):
    d = tmp_path / "rules"
    d.mkdir()
    (d / "bad.txt").write_text("# insults\nnitwit\nnumb skull\n\n")
    (d / "10.toml").write_text('[[rule]]\nid = "w"\naction = "hold"\nreason = "{matched}"\n'
                               'match.body.words_file = "bad.txt"\n')
    rs = load_rules(d)
    assert decide(msg(body="You NUMB SKULL."), MEMBER, rs).reason == "body has the word 'numb skull'"
    assert decide(msg(body="nitwits"), MEMBER, rs).rule_id == "default-member"
    before = rs.digest
    (d / "bad.txt").write_text("nitwit\n")
    assert load_rules(d).digest != before  # the word list is part of the rule set


def test_exempt_senders_skip_the_rule_and_the_trace_says_why(tmp_path):
    rs = rules(tmp_path, """
        [[rule]]
        id = "x"
        action = "reject"
        reason = "r"
        exempt = ["moderators", "trusted"]
        match.body.contains = "plain"
        """)
    assert decide(msg(), ctx(sender_is_moderator=True), rs).rule_id == "default-member"
    trusted = decide(msg(), ctx(sender_trust="trusted"), rs)
    assert trusted.trace[0].evidence == "exempt: the sender's trust level is trusted" and not trusted.trace[0].matched
    assert decide(msg(), ctx(), rs).rule_id == "x"


def test_tag_is_recorded_and_evaluation_goes_on_and_escalate_decides(tmp_path):
    rs = rules(tmp_path, """
        [[rule]]
        id = "tagged"
        action = "tag"
        reason = "r"
        match.subject.contains = "hello"

        [[rule]]
        id = "legal"
        action = "escalate"
        reason = "Escalated: {matched}"
        match.body.words = ["defamation"]
        """)
    d = decide(msg(body="This is defamation."), MEMBER, rs)
    assert (d.action, d.rule_id, d.tags) == ("escalate", "legal", ("tagged",))
    assert d.reason == "Escalated: body has the word 'defamation'"
    d2 = decide(msg(), MEMBER, rs)
    assert (d2.action, d2.tags) == ("accept", ("tagged",))


@pytest.mark.parametrize("text, words", [
    ('[[rule]]\nid = "a"\naction = "hold"\nreason = "r"\nexempt = ["admins"]\n', "exempt takes a list of"),
    ('[[rule]]\nid = "a"\naction = "hold"\nreason = "r"\nmatch.body.words_file = "../etc/passwd"\n',
     "is outside the rules directory"),
    ('[[rule]]\nid = "a"\naction = "hold"\nreason = "r"\nmatch.body.words_file = "none.txt"\n', "does not exist"),
    ('[[rule]]\nid = "a"\naction = "hold"\nreason = "r"\nmatch.links.gt = "many"\n', "takes a whole number"),
    ('[[rule]]\nid = "a"\naction = "hold"\nreason = "r"\nmatch.sender.member = "yes"\n', "is true or false"),
    ('[[rule]]\nid = "a"\naction = "hold"\nreason = "r"\nmatch.sender.trusted = true\n',
     "'sender.trusted' is not a field (did you mean 'sender.trust'?)"),
    ('[[rule]]\nid = "a"\naction = "hold"\nreason = "r"\nmatch.subject = 3\n', "subject needs a test"),
    ('[[rule]]\nid = "a"\naction = "hold"\nreason = "r"\nmatch.any = { subject.contains = "x" }\n',
     "any must be a list of condition tables"),
    ('lists = "dev@example.org"\n[[rule]]\nid = "a"\naction = "hold"\nreason = "r"\n', "lists must be a list"),
    ('[[rule]]\nid = "a"\naction = "hold"\nreason = 5\n', "the rule has no reason"),
])
def test_each_kind_of_mistake_is_reported_with_file_and_line(tmp_path, text, words):
    with pytest.raises(ConfigError) as err:
        rules(tmp_path, text)
    assert str(err.value).startswith("rules/10-test.toml:"), str(err.value)
    assert words in str(err.value)


def test_a_rule_after_one_that_decides_everything_is_unreachable(tmp_path):
    with pytest.raises(ConfigError) as err:
        rules(tmp_path, """
            [[rule]]
            id = "everything"
            action = "hold"
            reason = "all held"

            [[rule]]
            id = "never"
            action = "reject"
            reason = "r"
            match.body.contains = "x"
            """)
    assert str(err.value).startswith("rules/10-test.toml:7: rule 'never' can never match: rule "
                                     "'everything' at rules/10-test.toml:2")
    # a catch-all that only tags, or that exempts someone, hides nothing
    rules(tmp_path, '[[rule]]\nid = "t"\naction = "tag"\nreason = "r"\n\n'
          '[[rule]]\nid = "u"\naction = "hold"\nreason = "r"\nmatch.body.contains = "x"\n', name="10-test.toml")


def test_banned_senders_are_rejected_and_trusted_ones_skip_review(tmp_path):
    rs = rules(tmp_path, '[[rule]]\nid = "h"\naction = "hold"\nreason = "r"\nmatch.body.contains = "plain"\n\n'
                         '[[rule]]\nid = "x"\naction = "reject"\nreason = "exe"\nmatch.subject.contains = "exe"\n')
    banned = decide(msg(), ctx(sender_sanction="banned"), rs)
    assert (banned.action, banned.rule_id, banned.source) == ("reject", "banned", "builtin")
    trusted = decide(msg(), ctx(sender_trust="trusted", sender_is_member=False), rs)
    assert (trusted.action, trusted.rule_id) == ("accept", "trusted-sender")
    assert decide(msg(subject="exe"), ctx(sender_trust="trusted"), rs).action == "reject"  # not a review
