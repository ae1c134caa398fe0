DROP TABLE IF EXISTS calls, agents, knowledge_bases;
