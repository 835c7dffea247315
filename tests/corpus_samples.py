"""Dumps in the formats users download, written by the tests themselves (the real excerpts in
../shared/corpora/samples may not be copied here): MediaWiki XML (plain, bz2, multistream with its
index), the Namuwiki JSON array, NIKL-shaped JSON."""

from __future__ import annotations

import bz2
import json
from pathlib import Path
from xml.sax.saxutils import escape

HEADER = """<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.10/" version="0.10" xml:lang="ko">
  <siteinfo>
    <sitename>위키백과</sitename>
    <dbname>kowiki</dbname>
    <namespaces>
      <namespace key="0" case="first-letter" />
      <namespace key="4" case="first-letter">위키백과</namespace>
    </namespaces>
  </siteinfo>
"""
FOOTER = "</mediawiki>\n"

ARTICLE = """{{다른 뜻|베를린 (동음이의)}}
{{도시 정보
| 이름 = %(title)s
| 인구 = 3,664,088
}}
'''%(title)s'''({{llang|de|Berlin}})은 [[독일]]의 수도이다.<ref>{{웹 인용|url=http://example.org|제목=통계}}</ref> 인구는 [[유럽 연합|유럽 연합(EU)]]에서 가장 많다.%(number)s

== 역사 ==
[[파일:Berlin Reichstag.jpg|섬네일|250px|[[국가의회 의사당]]]]
약 1,500년 전에는 [[슬라브]] 민족들이 살고 있었다.<ref name="a">출처 문장</ref> ''프로이센''의 수도가 되었다.

{| class="wikitable"
|-
! 번호 !! 구역
|-
| 1 || 미테
|}

=== 분단 ===
* [[동베를린]]과 [[서베를린]]으로 나뉘었다.
* 장벽은 [[1989년]]에 무너졌다.<!-- 편집 주석 -->

[[분류:독일의 도시]]
[[en:Berlin]]
"""


def page_xml(page_id: int, title: str, text: str, namespace: int = 0, redirect: str | None = None) -> str:
    redirect_tag = f'    <redirect title="{escape(redirect)}" />\n' if redirect else ""
    return (f"  <page>\n    <title>{escape(title)}</title>\n    <ns>{namespace}</ns>\n    <id>{page_id}</id>\n"
            f"{redirect_tag}    <revision>\n      <id>{page_id * 10}</id>\n      <model>wikitext</model>\n"
            f'      <text bytes="{len(text.encode())}" xml:space="preserve">{escape(text)}</text>\n'
            f"    </revision>\n  </page>\n")


def wiki_pages(count: int = 30) -> list[str]:
    """Articles, plus a redirect and a project page the reader must skip, every tenth."""
    pages = []
    for number in range(count):
        title = f"베를린 {number}"
        pages.append(page_xml(100 + number, title, ARTICLE % {"title": title, "number": f" 문서 번호 {number}."}))
        if number % 10 == 3:
            pages.append(page_xml(5000 + number, f"베를린시 {number}", f"#넘겨주기 [[{title}]]", redirect=title))
        if number % 10 == 7:
            pages.append(page_xml(9000 + number, f"위키백과:사랑방 {number}", "'''토론''' 문서입니다.", namespace=4))
    return pages


def write_wiki_dump(folder: Path, count: int = 30, kind: str = "plain", pages_per_stream: int = 4) -> Path:
    """A dump of ``count`` articles: plain XML, one bz2 stream, or multistream bz2 with its index."""
    pages = wiki_pages(count)
    if kind == "plain":
        path = folder / "kowiki-test-pages-articles.xml"
        path.write_text(HEADER + "".join(pages) + FOOTER, encoding="utf-8")
        return path
    if kind == "bz2":
        path = folder / "kowiki-test-pages-articles.xml.bz2"
        path.write_bytes(bz2.compress((HEADER + "".join(pages) + FOOTER).encode()))
        return path
    path = folder / "kowiki-test-pages-articles-multistream.xml.bz2"
    index_lines, offset = [], 0
    with open(path, "wb") as dump:
        streams = [HEADER] + ["".join(pages[i : i + pages_per_stream]) for i in range(0, len(pages), pages_per_stream)]
        streams.append(FOOTER)
        for number, stream in enumerate(streams):
            if 0 < number < len(streams) - 1:
                for page in pages[(number - 1) * pages_per_stream : number * pages_per_stream]:
                    page_id = page.split("<id>")[1].split("<")[0]
                    title = page.split("<title>")[1].split("<")[0]
                    index_lines.append(f"{offset}:{page_id}:{title}\n")
            blob = bz2.compress(stream.encode())
            dump.write(blob)
            offset += len(blob)
    (folder / "kowiki-test-pages-articles-multistream-index.txt.bz2").write_bytes(
        bz2.compress("".join(index_lines).encode()))
    return path


NAMUMARK = """[include(틀:다른 뜻1, other1=동음이의, rd1=%(title)s (동음이의))]
[목차]
||<tablealign=right><-2> '''%(title)s''' ||
|| '''분류''' || [[프로그래밍 언어]] ||
== 개요 ==
'''%(title)s'''는 [[귀도 반 로섬|로섬]]이 만든 언어이다.[* 1991년에 [[발표]]되었다.] ~~농담이다~~ 정말 __쉽다__.[br]줄이 바뀐다.
{{{#!wiki style="border:1px solid"
{{{+1 큰 글씨}}}와 {{{#red 빨간 글씨}}}가 있다.}}}
{{{#!syntax python
print("숨겨질 코드")}}}
## 편집자 주석
> 인용문은 남는다.
 * 목록 항목 하나 %(number)s
[[파일:logo.png|width=100]]
[[분류:프로그래밍 언어]]
"""


def namu_records(count: int = 20) -> list[dict]:
    records = []
    for number in range(count):
        title = f"파이썬 {number}"
        records.append({"namespace": 0, "title": title, "text": NAMUMARK % {"title": title, "number": number},
                        "contributors": ["1.2.3.4", "user"]})
        if number % 5 == 2:
            records.append({"namespace": 1, "title": f"틀:정보 {number}", "text": "||틀||", "contributors": []})
    return records


def write_namu_dump(path: Path, records: list[dict]) -> Path:
    """One JSON array on one line, as the real dump."""
    path.write_text(json.dumps(records, ensure_ascii=False), encoding="utf-8")
    return path


def nikl_file(documents: int = 3, spoken: bool = False) -> dict:
    """A 모두의 말뭉치 file's shape: {id, metadata, document: [{id, metadata, paragraph: [{id, form}]}]}
    (utterance instead of paragraph for spoken corpora)."""
    unit = "utterance" if spoken else "paragraph"
    return {"id": "NIKL_TEST", "metadata": {"title": "시험 말뭉치"}, "document": [
        {"id": f"DOC{d}", "metadata": {"title": f"기사 {d}"},
         unit: [{"id": f"DOC{d}.{p}", "form": f"{d}번 문서의 {p}번째 문단입니다."} for p in range(1, 4)]}
        for d in range(documents)]}
