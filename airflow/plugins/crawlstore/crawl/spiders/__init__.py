"""The spiders, by the name a Source gives in `spider`."""

from crawlstore.crawl.spiders.base import SourceSpider
from crawlstore.crawl.spiders.catalogue import CatalogueSpider
from crawlstore.crawl.spiders.json_api import JsonApiSpider

SPIDERS: dict[str, type[SourceSpider]] = {
    CatalogueSpider.name: CatalogueSpider,
    JsonApiSpider.name: JsonApiSpider,
}

__all__ = ["SPIDERS", "CatalogueSpider", "JsonApiSpider", "SourceSpider"]
